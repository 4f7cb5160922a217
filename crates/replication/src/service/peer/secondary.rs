//! The secondary side of an HA pair: serving the peer protocol, unplanned failover, detach,
//! and taking the source over on Reverse Roles.

use super::*;

impl ReplicationService {
    /// Serve one request of the peer protocol from `initiator` on `target` (the server has
    /// checked that the initiator is one of the target's replica peers).
    pub fn peer_request(self: &Arc<Self>, initiator: &str, target: &str, text: &str) -> String {
        let mut resume = None;
        let reply = match serde_json::from_str::<PeerRequest>(text) {
            Ok(req) => self.serve_peer(initiator, target, req, &mut resume),
            Err(e) => reply_error(format!("not a peer request: {e}")),
        };
        // A reversed pair copies what differs (after the locks are released).
        if let Some(id) = resume {
            self.resume_copy(id);
        }
        serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into())
    }

    fn serve_peer(
        self: &Arc<Self>,
        initiator: &str,
        target: &str,
        req: PeerRequest,
        resume: &mut Option<u64>,
    ) -> PeerReply {
        let Some(host) = self.host().cloned() else {
            return reply_error("this server does not export volumes");
        };
        let _ops = self.ops();
        let mut cat = self.cat();
        let system = self.system_id(&mut cat);
        let groups: Vec<(u16, u16)> = host
            .portal_groups(target)
            .into_iter()
            .map(|g| (g, g))
            .collect();
        let base = PeerReply {
            system,
            groups: groups.clone(),
            ..PeerReply::default()
        };
        let remote = match &req {
            PeerRequest::Hello { .. } => return base,
            PeerRequest::Attach { .. } => 0,
            PeerRequest::State { remote }
            | PeerRequest::Promote { remote, .. }
            | PeerRequest::Demote { remote, .. }
            | PeerRequest::Dirty { remote, .. }
            | PeerRequest::Clean { remote }
            | PeerRequest::Reverse { remote, .. }
            | PeerRequest::Detach { remote } => *remote,
        };
        let rec = match &req {
            PeerRequest::Attach { .. } => None,
            _ => match cat.peers.get(&remote) {
                Some(p) if p.target.eq_ignore_ascii_case(target) => Some(p.clone()),
                _ => return reply_error(format!("no HA relationship sync:{remote} on {target}")),
            },
        };
        let answer = |p: &PeerRec, dirty: u64| PeerReply {
            remote: p.id,
            generation: p.generation,
            primary: p.primary,
            dirty_chunks: dirty,
            ..base.clone()
        };
        match req {
            PeerRequest::Hello { .. } => base,
            PeerRequest::Attach {
                system: src_system,
                sync,
                volume,
                lun,
                size,
                block_size,
                identity,
                mode,
                groups: src_groups,
                generation,
            } => {
                if src_groups
                    .iter()
                    .any(|(_, g)| groups.iter().any(|(_, x)| x == g))
                {
                    return reply_error(
                        "the two servers' portal group tags overlap: give each server its own",
                    );
                }
                // Attached already (a retry): the same answer.
                if let Some(p) = cat.peers.values().find(|p| {
                    p.source_system == src_system
                        && p.source_sync == sync
                        && p.target.eq_ignore_ascii_case(target)
                        && p.lun == lun
                }) {
                    return answer(p, 0);
                }
                let Some(vrec) = cat
                    .volumes
                    .values()
                    .find(|v| {
                        v.exposures
                            .iter()
                            .any(|e| e.target.eq_ignore_ascii_case(target) && e.lun == lun)
                    })
                    .cloned()
                else {
                    return reply_error(format!("no volume is exposed as LUN {lun} of {target}"));
                };
                if cat
                    .syncs
                    .values()
                    .any(|s| s.source == vrec.name || s.target == vrec.name)
                    || cat.peers.values().any(|p| p.volume == vrec.name)
                {
                    return reply_error(format!("{} is in another relationship", vrec.name));
                }
                if vrec.size < size || vrec.block_size != block_size {
                    return reply_error(format!(
                        "{} has {} bytes of {}-byte blocks; the source {} of {}",
                        vrec.name, vrec.size, vrec.block_size, size, block_size
                    ));
                }
                let Some(vol) = self.volume(&vrec.name) else {
                    return reply_error(format!("{} is not open", vrec.name));
                };
                let id = cat.alloc_id();
                let p = PeerRec {
                    id,
                    volume: vrec.name.clone(),
                    target: target.to_owned(),
                    lun,
                    source_system: src_system,
                    source_volume: volume,
                    source_sync: sync,
                    mode,
                    initiator: initiator.to_owned(),
                    groups: src_groups,
                    generation,
                    primary: false,
                    established: now(),
                };
                // Export under the source's identity, standby, the peer admitted.
                for e in &vrec.exposures {
                    host.hide(&e.target, e.lun);
                }
                let mut exported = Ok(());
                for e in &vrec.exposures {
                    exported = exported.and_then(|()| {
                        host.expose(&ExposedVolume {
                            name: vrec.name.clone(),
                            device: vol.clone(),
                            exposure: e.clone(),
                            uid: vrec.uid,
                            block_size: vrec.block_size,
                            identity: Some(identity.clone()),
                        })
                    });
                }
                if let Err(e) = exported {
                    return reply_error(format!("exporting {}: {e}", vrec.name));
                }
                if let Some(v) = cat.volumes.get_mut(&vrec.name) {
                    v.identity = Some(identity);
                }
                if let Err(e) = self.install_track(&p) {
                    return reply_error(e);
                }
                self.apply_secondary_access(&p);
                cat.peers.insert(id, p.clone());
                self.save(&mut cat);
                tracing::info!(sync = id, volume = %p.volume, source = %p.source_volume, "HA pair: this server holds the secondary copy");
                answer(&p, 0)
            }
            PeerRequest::State { .. } => {
                let Some(p) = rec else {
                    return reply_error("no such relationship");
                };
                let dirty = self.track(p.id).map_or(0, |t| t.bitmap().count());
                answer(&p, dirty)
            }
            PeerRequest::Promote { generation, .. } => {
                let Some(mut p) = rec else {
                    return reply_error("no such relationship");
                };
                self.set_role(&mut cat, &mut p, true, generation);
                tracing::info!(
                    sync = p.id,
                    generation = p.generation,
                    "HA pair: promoted to primary"
                );
                answer(&p, 0)
            }
            PeerRequest::Demote { generation, .. } => {
                let Some(mut p) = rec else {
                    return reply_error("no such relationship");
                };
                if p.primary {
                    // Hosts' commands drain before the peer may write again.
                    host.set_access(
                        &p.volume,
                        &Access {
                            own: state::TRANSITIONING,
                            peer: state::TRANSITIONING,
                            peer_groups: p.groups.clone(),
                            peer_initiators: vec![p.initiator.clone()],
                            peer_writes: false,
                        },
                    );
                    if !host.settle(&p.volume, SETTLE) {
                        tracing::warn!(
                            sync = p.id,
                            "HA pair: host commands still running after the demotion wait"
                        );
                    }
                }
                self.set_role(&mut cat, &mut p, false, generation);
                let dirty = self.track(p.id).map_or(0, |t| t.bitmap().count());
                tracing::info!(sync = p.id, dirty, "HA pair: demoted to secondary");
                answer(&p, dirty)
            }
            PeerRequest::Dirty { from, .. } => {
                let Some(p) = rec else {
                    return reply_error("no such relationship");
                };
                let (r, next) = self
                    .track(p.id)
                    .map_or((Vec::new(), None), |t| ranges(&t.bitmap(), from));
                PeerReply {
                    ranges: r,
                    next,
                    ..answer(&p, 0)
                }
            }
            PeerRequest::Clean { .. } => {
                let Some(p) = rec else {
                    return reply_error("no such relationship");
                };
                if p.primary {
                    return reply_error("the copy is primary: demote it first");
                }
                if let Some(t) = self.track(p.id)
                    && let Err(e) = t.clear()
                {
                    return reply_error(format!("clearing the change map: {e}"));
                }
                answer(&p, 0)
            }
            PeerRequest::Reverse {
                check,
                target: peer_target,
                lun,
                system: peer_system,
                groups: peer_groups,
                generation,
                ranges,
                full,
                peer_id,
                ..
            } => {
                let Some(p) = rec else {
                    return reply_error("no such relationship");
                };
                if !p.primary {
                    return reply_error("Reverse Roles needs this copy primary (after a Failover)");
                }
                let Some(ap) = cat
                    .access_points
                    .values()
                    .find(|a| a.target.eq_ignore_ascii_case(&peer_target) && a.lun == lun)
                    .cloned()
                else {
                    return reply_error(format!(
                        "no access point to LUN {lun} of {peer_target} here: create one first"
                    ));
                };
                let writer = ap
                    .initiator_name
                    .clone()
                    .unwrap_or_else(|| remote::DEFAULT_INITIATOR.to_owned());
                if check {
                    return PeerReply {
                        initiator: writer,
                        volume: p.volume.clone(),
                        ..answer(&p, 0)
                    };
                }
                match self.reverse_here(
                    &mut cat,
                    &p,
                    &ap,
                    peer_system,
                    peer_groups,
                    generation,
                    &ranges,
                    full,
                    peer_id,
                ) {
                    Ok(id) => {
                        *resume = Some(id);
                        PeerReply {
                            remote: id,
                            initiator: writer,
                            volume: p.volume.clone(),
                            ..base
                        }
                    }
                    Err(e) => reply_error(e.message),
                }
            }
            PeerRequest::Detach { .. } => {
                let Some(p) = rec else {
                    return reply_error("no such relationship");
                };
                self.detach_peer(&mut cat, &p);
                self.save(&mut cat);
                PeerReply {
                    remote: p.id,
                    ..base
                }
            }
        }
    }

    /// End the secondary side of a pair: the volume keeps its data and gets its own
    /// identity back, fully accessible.
    pub(crate) fn detach_peer(&self, cat: &mut Catalog, p: &PeerRec) {
        cat.peers.remove(&p.id);
        if let Some(t) = self.rt().peer_tracks.remove(&p.id)
            && let Some(vol) = self.volume(&p.volume)
        {
            let hook: Arc<dyn WriteHook> = t;
            vol.remove_hook(&hook);
        }
        let _ = std::fs::remove_file(self.path(&format!("peer-{}.dirty", p.id)));
        let Some(host) = self.host() else { return };
        host.set_access(&p.volume, &Access::default());
        if let (Some(v), Some(vol)) = (cat.volumes.get_mut(&p.volume), self.volume(&p.volume)) {
            v.identity = None;
            for e in &v.exposures {
                host.hide(&e.target, e.lun);
                if let Err(err) = host.expose(&ExposedVolume {
                    name: v.name.clone(),
                    device: vol.clone(),
                    exposure: e.clone(),
                    uid: v.uid,
                    block_size: v.block_size,
                    identity: None,
                }) {
                    tracing::error!(volume = %v.name, error = %err, "re-exporting a detached HA copy");
                }
            }
        }
        tracing::info!(sync = p.id, volume = %p.volume, "HA pair detached: the copy is independent");
    }

    /// Reverse Roles on the secondary side that is primary: make this copy the source of a
    /// mirror to the peer's volume, copying only the chunks either side changed. Returns the
    /// new relationship.
    #[allow(clippy::too_many_arguments)]
    fn reverse_here(
        self: &Arc<Self>,
        cat: &mut Catalog,
        p: &PeerRec,
        ap: &remote::AccessPointRec,
        peer_system: String,
        peer_groups: Vec<(u16, u16)>,
        generation: u64,
        ranges: &[(u64, u64)],
        full: bool,
        peer_id: u64,
    ) -> Result<u64, MethodError> {
        let vol = self
            .volume(&p.volume)
            .ok_or_else(|| MethodError::failed("volume not open"))?;
        let vrec = cat
            .volumes
            .get(&p.volume)
            .cloned()
            .ok_or_else(|| MethodError::failed("volume vanished"))?;
        let dev = self.open_remote(ap)?;
        if blockdev::BlockDevice::size(&*dev) < vrec.size || dev.block_size() != vrec.block_size {
            return Err(MethodError::failed(format!(
                "{} does not match {} in size or block size",
                ap.url(),
                p.volume
            )));
        }
        let mut tname = format!("{}-peer", p.volume);
        let mut n = 1;
        while cat.volumes.contains_key(&tname) {
            n += 1;
            tname = format!("{}-peer{n}", p.volume);
        }
        let pool = self
            .pool(None)
            .ok_or_else(|| MethodError::failed("no pool"))?;
        // What differs: this copy's changes since it became primary and the peer's.
        let chunks = vol.chunk_count();
        let mut differ = if full {
            Bitmap::full(chunks)
        } else {
            let mut b = self
                .track(p.id)
                .map_or_else(|| Bitmap::full(chunks), |t| t.bitmap().clone());
            for &(f, l) in ranges {
                b.set_range(f, l.saturating_add(1));
            }
            b
        };
        if self.track(p.id).is_none() {
            differ = Bitmap::full(chunks);
        }
        cat.volumes.insert(
            tname.clone(),
            VolumeRec {
                name: tname.clone(),
                path: ap.url(),
                size: vrec.size,
                block_size: vrec.block_size,
                pool: None,
                kind: VolumeKind::Remote {
                    access_point: ap.name.clone(),
                },
                exposures: Vec::new(),
                uid: new_uid(&tname, 0),
                identity: None,
            },
        );
        self.add_remote_volume(&tname, dev);
        let gid = cat.alloc_id();
        let id = cat.alloc_id();
        {
            // No host write slips between the new pair's full bitmap and the real one.
            let _q = vol.quiesce();
            if let Err(e) = self.make_pair(
                cat,
                id,
                gid,
                crate::types::SyncType::Mirror,
                p.mode,
                &p.volume,
                &tname,
                &pool,
                &settings::ReplicationSettings::default(),
            ) {
                self.forget_remote_volume(cat, &tname);
                return Err(e);
            }
            if let Ok(m) = self.mirror(id) {
                m.set_out_of_sync(differ);
            }
            // This copy stops being the secondary.
            cat.peers.remove(&p.id);
            if let Some(t) = self.rt().peer_tracks.remove(&p.id) {
                let hook: Arc<dyn WriteHook> = t;
                vol.remove_hook(&hook);
            }
        }
        let _ = std::fs::remove_file(self.path(&format!("peer-{}.dirty", p.id)));
        let name = format!("{}-reversed", p.volume);
        cat.groups.insert(
            tname.clone(),
            GroupRec {
                name: tname.clone(),
                members: vec![tname.clone()],
            },
        );
        cat.group_syncs.insert(
            gid,
            GroupSyncRec {
                id: gid,
                name,
                sync_type: crate::types::SyncType::Mirror,
                mode: p.mode,
                source_group: None,
                target_group: tname.clone(),
                consistency: false,
                members: vec![id],
                established: now(),
            },
        );
        let link = PeerLink {
            system: peer_system,
            remote: peer_id,
            groups: peer_groups,
            generation,
            peer_primary: false,
            split_brain: false,
        };
        self.apply_primary_access(&p.volume, &link);
        if let Some(s) = cat.syncs.get_mut(&id) {
            s.peer = Some(link);
        }
        self.save(cat);
        tracing::info!(sync = id, source = %p.volume, "HA pair reversed: this server holds the source");
        Ok(id)
    }

    /// Operations on the secondary side of an HA pair: an unplanned Failover (the source
    /// server is lost) and Detach.
    pub(crate) fn peer_modify(
        &self,
        op: crate::types::Operation,
        id: u64,
    ) -> Result<(), MethodError> {
        use crate::types::Operation;
        let mut cat = self.cat();
        let mut p = cat
            .peers
            .get(&id)
            .cloned()
            .ok_or_else(|| MethodError::invalid("Synchronization", "no such relationship"))?;
        match op {
            Operation::Failover => {
                if p.primary {
                    return Err(MethodError::failed("this copy is primary already"));
                }
                let generation = p.generation + 1;
                self.set_role(&mut cat, &mut p, true, generation);
                tracing::warn!(
                    sync = id,
                    generation = p.generation,
                    "HA pair: unplanned failover, this copy is primary"
                );
                Ok(())
            }
            Operation::Detach => {
                self.detach_peer(&mut cat, &p);
                self.save(&mut cat);
                Ok(())
            }
            _ => Err(MethodError::not_supported(
                "Operation",
                "this server holds the secondary copy: run the operation on the source's server (here only Failover and Detach)",
            )),
        }
    }
}
