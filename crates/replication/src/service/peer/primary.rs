//! The managing side of an HA pair: talking to the peer, attach, planned Failover, taking
//! the roles back (Failback, Resync), reconnection and split brain, Reverse Roles, detach.

use super::*;

impl ReplicationService {
    /// Send a request to the peer of relationship `id` (over the mirror's session).
    pub(crate) fn peer_call(&self, target: &str, req: &PeerRequest) -> Result<PeerReply, String> {
        let dev = self
            .rt()
            .remotes
            .get(target)
            .cloned()
            .ok_or_else(|| format!("{target} is not a remote volume"))?;
        let session = dev
            .session()
            .map_err(|e| format!("peer unreachable: {e}"))?;
        let mut keys = iscsi_proto::text::TextKeys::default();
        keys.push(
            PEER_KEY,
            &serde_json::to_string(req).map_err(|e| e.to_string())?,
        );
        let answer = session
            .text(&keys)
            .map_err(|e| format!("peer request failed: {e}"))?;
        let v = answer
            .get(PEER_KEY)
            .ok_or_else(|| "the peer does not speak the ironlun peer protocol".to_owned())?;
        if v == "NotUnderstood" {
            return Err(
                "the peer does not accept peer requests from this initiator (replica_peers)".into(),
            );
        }
        let r: PeerReply = serde_json::from_str(v).map_err(|e| format!("bad peer reply: {e}"))?;
        match r.error {
            Some(e) => Err(format!("the peer refused: {e}")),
            None => Ok(r),
        }
    }

    /// After a remote mirror to an ironlun peer was made: attach the peer (both servers know
    /// the pair, one identity, ALUA). A peer that does not speak the protocol leaves a
    /// one-way remote mirror.
    pub(crate) fn attach_peer(&self, cat: &mut Catalog, id: u64) -> Result<(), MethodError> {
        let Some(s) = cat.syncs.get(&id).cloned() else {
            return Ok(());
        };
        let Some(host) = self.host().cloned() else {
            return Ok(());
        };
        let system = self.system_id(cat);
        match self.peer_call(
            &s.target,
            &PeerRequest::Hello {
                system: system.clone(),
            },
        ) {
            Ok(_) => {}
            Err(e) => {
                tracing::info!(sync = id, reason = %e, "remote mirror target is not an ironlun HA peer: one-way mirror");
                return Ok(());
            }
        }
        let src = cat
            .volumes
            .get(&s.source)
            .cloned()
            .ok_or_else(|| MethodError::failed("source volume vanished"))?;
        let ap = match &cat.volumes.get(&s.target).map(|v| v.kind.clone()) {
            Some(VolumeKind::Remote { access_point }) => cat
                .access_points
                .get(access_point)
                .cloned()
                .ok_or_else(|| MethodError::failed("access point vanished"))?,
            _ => return Ok(()),
        };
        let Some(identity) = host.identity(&s.source) else {
            tracing::info!(sync = id, source = %s.source, "the source is not exported: a one-way remote mirror, not an HA pair");
            return Ok(());
        };
        let exposure_target = src
            .exposures
            .first()
            .map(|e| e.target.clone())
            .unwrap_or_else(|| ap.target.clone());
        let groups = host
            .portal_groups(&exposure_target)
            .into_iter()
            .map(|g| (g, g))
            .collect();
        let r = self
            .peer_call(
                &s.target,
                &PeerRequest::Attach {
                    system,
                    sync: id,
                    volume: s.source.clone(),
                    lun: ap.lun,
                    size: src.size,
                    block_size: src.block_size,
                    identity,
                    mode: s.mode,
                    groups,
                    generation: 1,
                },
            )
            .map_err(|e| MethodError::failed(format!("attaching the HA peer: {e}")))?;
        let link = PeerLink {
            system: r.system,
            remote: r.remote,
            groups: r.groups,
            generation: 1,
            peer_primary: false,
            split_brain: false,
        };
        self.apply_primary_access(&s.source, &link);
        if let Some(rec) = cat.syncs.get_mut(&id) {
            rec.peer = Some(link);
        }
        Ok(())
    }

    /// The peer's chunks written while it was primary.
    fn peer_dirty(&self, target: &str, remote: u64, chunks: u64) -> Result<Bitmap, String> {
        let mut b = Bitmap::new(chunks);
        let mut from = 0;
        loop {
            let r = self.peer_call(target, &PeerRequest::Dirty { remote, from })?;
            for (f, l) in r.ranges {
                if f > l || l >= chunks {
                    return Err(format!("the peer reported chunks {f}..{l} of {chunks}"));
                }
                b.set_range(f, l + 1);
            }
            match r.next {
                Some(n) if n > from => from = n,
                Some(_) => return Err("the peer's change map does not advance".into()),
                None => return Ok(b),
            }
        }
    }

    /// Planned Failover of an HA pair (on the managing side): hosts' commands here drain,
    /// the mirror drains, the peer is promoted, this side becomes standby.
    pub(crate) fn ha_failover(&self, cat: &mut Catalog, id: u64) -> Result<(), MethodError> {
        let Some((s, mut link)) = ha_pair(cat, id)? else {
            return Ok(());
        };
        let host = self
            .host()
            .cloned()
            .ok_or_else(|| MethodError::failed("no server"))?;
        let st = self
            .peer_call(
                &s.target,
                &PeerRequest::State {
                    remote: link.remote,
                },
            )
            .map_err(|e| {
                MethodError::failed(format!(
                    "{e}; for an unplanned failover run Failover on the peer's relationship"
                ))
            })?;
        if st.primary {
            return Err(MethodError::failed("the peer is primary already"));
        }
        let mirror = self.mirror(id)?;
        host.set_access(
            &s.source,
            &Access {
                own: state::TRANSITIONING,
                peer: state::TRANSITIONING,
                peer_groups: link.groups.clone(),
                ..Access::default()
            },
        );
        host.settle(&s.source, SETTLE);
        let drained = mirror.drain(self.drain_timeout());
        let state = mirror.state();
        let in_sync = drained && matches!(state, CopyState::Synchronized);
        if !in_sync {
            self.apply_primary_access(&s.source, &link);
            return Err(MethodError::failed(format!(
                "the peer's copy is not synchronized (CopyState {}): nothing was changed",
                state as u16
            )));
        }
        mirror.failover();
        let generation = link.generation.max(st.generation) + 1;
        if let Err(e) = self.peer_call(
            &s.target,
            &PeerRequest::Promote {
                remote: link.remote,
                generation,
            },
        ) {
            // Nothing changed on the peer: this side serves again and the mirror catches up.
            self.apply_primary_access(&s.source, &link);
            mirror.stop_following(CopyState::Unsynchronized);
            return Err(MethodError::failed(format!(
                "promoting the peer: {e}; the mirror resynchronizes"
            )));
        }
        link.generation = generation;
        link.peer_primary = true;
        self.apply_primary_access(&s.source, &link);
        if let Some(r) = cat.syncs.get_mut(&id) {
            r.peer = Some(link);
            r.state = CopyState::Failedover;
        }
        self.save(cat);
        tracing::info!(
            sync = id,
            generation,
            "HA pair: planned failover to the peer"
        );
        Ok(())
    }

    /// Before a Failback (the peer's data wins) or a Resync (this side's data wins) of an
    /// HA pair whose peer was primary: demote the peer, record what it changed as changed on
    /// both sides, and serve here again. The caller's restore or copy then moves the data.
    pub(crate) fn ha_take_back(&self, cat: &mut Catalog, id: u64) -> Result<(), MethodError> {
        let Some((s, mut link)) = ha_pair(cat, id)? else {
            return Ok(());
        };
        let mirror = self.mirror(id)?;
        let r = self
            .peer_call(
                &s.target,
                &PeerRequest::Demote {
                    remote: link.remote,
                    generation: link.generation,
                },
            )
            .map_err(|e| MethodError::failed(format!("demoting the peer: {e}")))?;
        let chunks = mirror.source().chunk_count();
        let dirty = self
            .peer_dirty(&s.target, link.remote, chunks)
            .map_err(|e| MethodError::failed(format!("reading the peer's changes: {e}")))?;
        mirror.add_target_dirty(&dirty);
        mirror
            .save_bitmaps()
            .map_err(|e| MethodError::failed(format!("saving the mirror bitmaps: {e}")))?;
        self.peer_call(
            &s.target,
            &PeerRequest::Clean {
                remote: link.remote,
            },
        )
        .map_err(|e| MethodError::failed(format!("clearing the peer's change map: {e}")))?;
        link.generation = link.generation.max(r.generation);
        link.peer_primary = false;
        link.split_brain = false;
        self.apply_primary_access(&s.source, &link);
        if let Some(rec) = cat.syncs.get_mut(&id) {
            rec.peer = Some(link);
        }
        tracing::info!(
            sync = id,
            chunks = dirty.count(),
            "HA pair: the peer is secondary again"
        );
        Ok(())
    }

    /// The link to an HA peer works again: if the peer was promoted past this side, stop
    /// serving writes here (and if both were written, mark the split brain). Returns whether
    /// the pair may resynchronize by itself.
    pub(crate) fn ha_reconnected(&self, id: u64) -> bool {
        let (s, link) = {
            let cat = self.cat();
            match cat.syncs.get(&id) {
                Some(s) => match &s.peer {
                    Some(l) => (s.clone(), l.clone()),
                    None => return true,
                },
                None => return false,
            }
        };
        let st = match self.peer_call(
            &s.target,
            &PeerRequest::State {
                remote: link.remote,
            },
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(sync = id, error = %e, "HA peer answers iSCSI but not its state");
                return false;
            }
        };
        if !st.primary || st.generation <= link.generation && !link.peer_primary {
            return !link.split_brain;
        }
        let Ok(mirror) = self.mirror(id) else {
            return false;
        };
        let written_here = mirror.dirty().0 > 0;
        let split = written_here && st.dirty_chunks > 0;
        let mut link = link;
        link.generation = st.generation;
        link.peer_primary = true;
        link.split_brain = split;
        self.apply_primary_access(&s.source, &link);
        mirror.stop_following(if split {
            CopyState::Broken
        } else {
            CopyState::Failedover
        });
        let mut cat = self.cat();
        if let Some(r) = cat.syncs.get_mut(&id) {
            r.peer = Some(link);
        }
        self.save(&mut cat);
        if split {
            tracing::error!(
                sync = id,
                "HA pair: split brain (both sides were written): Failback keeps the peer's data, Resync this side's"
            );
        } else {
            tracing::warn!(
                sync = id,
                "HA pair: the peer was promoted while apart; this side stops serving writes"
            );
        }
        false
    }

    /// Reverse Roles of an HA pair whose peer is primary (after a Failover): the peer
    /// becomes the source of the relationship and this side its secondary copy, and only the
    /// chunks either side changed are copied. Returns the new relationship (on this side,
    /// the secondary's record).
    pub(crate) fn ha_reverse(&self, cat: &mut Catalog, id: u64) -> Result<u64, MethodError> {
        let (s, link) = ha_pair(cat, id)?.ok_or_else(|| MethodError::failed("not an HA pair"))?;
        if !link.peer_primary || link.split_brain {
            return Err(MethodError::failed(
                "Reverse Roles of an HA pair follows a Failover (the peer primary, no split brain)",
            ));
        }
        let host = self
            .host()
            .cloned()
            .ok_or_else(|| MethodError::failed("no server"))?;
        let (target, lun) = host
            .places(&s.source)
            .into_iter()
            .next()
            .ok_or_else(|| MethodError::failed(format!("{} is not exported here", s.source)))?;
        let mirror = self.mirror(id)?;
        let (mine, _) = mirror.bitmaps();
        let (ranges, more) = ranges(&mine, 0);
        let full = more.is_some();
        let system = self.system_id(cat);
        let req = |check: bool, peer_id: u64| PeerRequest::Reverse {
            remote: link.remote,
            check,
            target: target.clone(),
            lun,
            system: system.clone(),
            groups: host
                .portal_groups(&target)
                .into_iter()
                .map(|g| (g, g))
                .collect(),
            generation: link.generation,
            ranges: if full { Vec::new() } else { ranges.clone() },
            full,
            peer_id,
        };
        let check = self
            .peer_call(&s.target, &req(true, 0))
            .map_err(|e| MethodError::failed(format!("Reverse Roles: {e}")))?;
        // This side becomes the secondary: it admits the peer's writer from now on.
        let pid = cat.alloc_id();
        let mut p = PeerRec {
            id: pid,
            volume: s.source.clone(),
            target: target.clone(),
            lun,
            source_system: link.system.clone(),
            source_volume: check.volume.clone(),
            source_sync: 0,
            mode: s.mode,
            initiator: check.initiator,
            groups: link.groups.clone(),
            generation: link.generation,
            primary: false,
            established: now(),
        };
        // The peer's writer is admitted before it starts copying.
        if let Err(e) = self.install_track(&p) {
            return Err(MethodError::failed(format!("HA copy: {e}")));
        }
        self.apply_secondary_access(&p);
        // The failed-over pair here refuses writes to its source: it lets go of the volume
        // before the peer starts copying to it.
        mirror.detach();
        let r = match self.peer_call(&s.target, &req(false, pid)) {
            Ok(r) => r,
            Err(e) => {
                mirror.attach();
                // Nothing changed on the peer: back to the failed-over pair.
                if let Some(t) = self.rt().peer_tracks.remove(&pid)
                    && let Some(vol) = self.volume(&p.volume)
                {
                    let hook: Arc<dyn WriteHook> = t;
                    vol.remove_hook(&hook);
                }
                let _ = std::fs::remove_file(self.path(&format!("peer-{pid}.dirty")));
                self.apply_primary_access(&s.source, &link);
                return Err(MethodError::failed(format!("Reverse Roles: {e}")));
            }
        };
        p.source_sync = r.remote;
        self.finish_reverse(cat, id, p);
        Ok(pid)
    }

    /// The managing side's part of Reverse Roles once the peer holds the source.
    fn finish_reverse(&self, cat: &mut Catalog, id: u64, p: PeerRec) {
        let gid = cat.syncs.get(&id).and_then(|s| s.group_sync);
        if let Err(e) = self.remove_pair(cat, id, false) {
            tracing::error!(sync = id, error = %e.message, "removing the reversed pair");
        }
        if let Some(gid) = gid {
            let empty = cat.group_syncs.get_mut(&gid).is_some_and(|g| {
                g.members.retain(|m| *m != id);
                g.members.is_empty()
            });
            if empty
                && let Some(g) = cat.group_syncs.remove(&gid)
                && cat
                    .groups
                    .get(&g.target_group)
                    .is_some_and(|t| t.members.is_empty())
            {
                cat.groups.remove(&g.target_group);
            }
        }
        cat.peers.insert(p.id, p);
        self.save(cat);
    }

    /// End an HA pair on the managing side (Detach, Return To ResourcePool): tell the peer.
    pub(crate) fn ha_detach(&self, cat: &Catalog, id: u64) {
        let Some(s) = cat.syncs.get(&id) else { return };
        let Some(link) = &s.peer else { return };
        if let Err(e) = self.peer_call(
            &s.target,
            &PeerRequest::Detach {
                remote: link.remote,
            },
        ) {
            tracing::warn!(sync = id, error = %e, "the HA peer was not told of the detach");
        }
        if let Some(host) = self.host() {
            host.set_access(&s.source, &Access::default());
        }
    }
}
