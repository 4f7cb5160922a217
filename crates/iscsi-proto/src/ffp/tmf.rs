//! Task management (RFC 7143 section 11.5, SAM-5 section 7): ABORT TASK, the task set and
//! LU resets, target resets, and TMF responses held until the tasks they wait for are gone.

use super::{CloseReason, Connection, Output, ResetEvent, task::TaskState};
use crate::{
    lun::decode_lun,
    pdu::{Pdu, TaskMgmtRequest, TaskMgmtResponse},
    serial::{sn_in_window, sn_lt},
};

/// A pending task management response, sent once the tasks it waits for are gone.
#[derive(Debug)]
pub(super) struct PendingTmf {
    itt: u32,
    waiting_for: Vec<u32>,
    response: u8,
    close_after: bool,
}

/// Aborted ITTs remembered so that their late Data-Out is discarded rather than rejected.
const ABORTED_MEMORY: usize = 256;

impl Connection {
    /// Task management (RFC 7143 section 11.5, SAM-5 section 7).
    pub(super) fn task_mgmt(&mut self, t: TaskMgmtRequest, immediate: bool) {
        if !immediate {
            self.window_advance();
        }
        let lun = decode_lun(t.lun);
        let lun_ok = lun.is_some_and(|l| self.config.luns.contains(&l));
        let mut waiting = Vec::new();
        let mut close_after = false;
        let response = match t.function {
            // ABORT TASK
            1 => {
                if !lun_ok {
                    2
                } else if let Some(task) = self.tasks.get(&t.referenced_task_tag) {
                    if task.cmd.lun != t.lun {
                        1
                    } else {
                        let itt = t.referenced_task_tag;
                        if self.abort_task(itt) {
                            waiting.push(itt);
                        }
                        0
                    }
                } else if let Some(pos) = self.held_position(t.referenced_task_tag) {
                    self.held.remove(&pos);
                    0
                } else if sn_lt(t.ref_cmd_sn, t.cmd_sn)
                    && sn_in_window(t.ref_cmd_sn, self.exp_cmd_sn, self.max_cmd_sn)
                {
                    // The command has not arrived (RFC 7143 section 11.5.1): its CmdSN counts
                    // as received, and the command is dropped should it still come.
                    self.skipped.insert(t.ref_cmd_sn);
                    self.deliver_held();
                    0
                } else {
                    // Unknown, or already completed with its response sent or on the way.
                    1
                }
            }
            // ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET
            2 | 4 | 5 => {
                if lun_ok {
                    let itts: Vec<u32> = self
                        .tasks
                        .iter()
                        .filter(|(_, task)| decode_lun(task.cmd.lun) == lun)
                        .map(|(&i, _)| i)
                        .collect();
                    for itt in itts {
                        if self.abort_task(itt) {
                            waiting.push(itt);
                        }
                    }
                    let lun = lun.unwrap_or(0);
                    let ev = if t.function == 5 {
                        ResetEvent::LogicalUnit { lun }
                    } else {
                        ResetEvent::TaskSet { lun }
                    };
                    self.outputs.push_back(Output::Reset(ev));
                    0
                } else {
                    2
                }
            }
            // TARGET WARM RESET, TARGET COLD RESET
            6 | 7 => {
                let itts: Vec<u32> = self.tasks.keys().copied().collect();
                for itt in itts {
                    if self.abort_task(itt) {
                        waiting.push(itt);
                    }
                }
                if t.function == 7 {
                    close_after = true;
                    self.outputs
                        .push_back(Output::Reset(ResetEvent::TargetCold));
                } else {
                    self.outputs
                        .push_back(Output::Reset(ResetEvent::TargetWarm));
                }
                0
            }
            // CLEAR ACA: no ACA is ever established (NACA is not supported).
            3 => 5,
            // TASK REASSIGN needs ErrorRecoveryLevel 2.
            8 => 4,
            _ => 5,
        };
        self.pending_tmfs.push(PendingTmf {
            itt: t.itt,
            waiting_for: waiting,
            response,
            close_after,
        });
        self.flush_tmfs();
    }

    pub(super) fn held_position(&self, itt: u32) -> Option<u32> {
        self.held.iter().find_map(|(&sn, (p, _))| match p {
            Pdu::ScsiCommand(c) if c.itt == itt => Some(sn),
            _ => None,
        })
    }

    /// Abort a task. Returns true if it is executing (its completion must be awaited).
    pub(super) fn abort_task(&mut self, itt: u32) -> bool {
        let Some(t) = self.tasks.get_mut(&itt) else {
            return false;
        };
        t.aborted = true;
        let executing = t.state == TaskState::Executing;
        self.remember_aborted(itt);
        if executing {
            // Long-running commands may stop early; the status is dropped either way.
            self.outputs.push_back(Output::Abort { itt });
            return true;
        }
        if let Some(sn) = self.held_position(itt) {
            self.held.remove(&sn);
        }
        self.retire(itt);
        false
    }

    /// Remember an aborted ITT so that its late Data-Out is discarded, not rejected.
    pub(super) fn remember_aborted(&mut self, itt: u32) {
        if self.aborted.len() >= ABORTED_MEMORY {
            self.aborted.pop_front();
        }
        self.aborted.push_back(itt);
    }

    pub(super) fn flush_tmfs(&mut self) {
        let mut i = 0;
        while i < self.pending_tmfs.len() {
            let tasks = &self.tasks;
            self.pending_tmfs[i]
                .waiting_for
                .retain(|itt| tasks.contains_key(itt));
            if self.pending_tmfs[i].waiting_for.is_empty() {
                let p = self.pending_tmfs.remove(i);
                let stat_sn = self.next_stat_sn();
                self.outputs
                    .push_back(Output::Send(Pdu::TaskMgmtResponse(TaskMgmtResponse {
                        response: p.response,
                        itt: p.itt,
                        stat_sn,
                        exp_cmd_sn: self.exp_cmd_sn,
                        max_cmd_sn: self.max_cmd_sn,
                    })));
                if p.close_after {
                    self.close(CloseReason::TargetReset);
                }
            } else {
                i += 1;
            }
        }
    }
}
