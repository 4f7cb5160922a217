//! Volumes and replication groups: CreateVolume, DeleteVolume, ExposeVolume, HideVolume,
//! CreateGroup, DeleteGroup, AddMembers, RemoveMembers.

use super::{
    Exposure, GroupRec, MethodError, ReplicationService, VolumeKind, VolumeRec, create::open_new,
    new_uid, valid_name,
};
use crate::{types::ReturnCode, volume::Volume};

impl ReplicationService {
    /// CreateVolume: a new sparse volume in a pool.
    pub fn create_volume(
        &self,
        name: &str,
        size: u64,
        pool: Option<&str>,
    ) -> Result<String, MethodError> {
        if !valid_name(name) {
            return Err(MethodError::invalid(
                "ElementName",
                "names are 1 to 64 letters, digits, '.', '_' or '-'",
            ));
        }
        if size == 0 || !size.is_multiple_of(512) {
            return Err(MethodError::invalid(
                "Size",
                "the size must be a non-zero multiple of 512 bytes",
            ));
        }
        let pool = self
            .pool(pool)
            .ok_or_else(|| MethodError::invalid("Pool", "no such pool"))?;
        let mut cat = self.cat();
        if cat.volumes.contains_key(name) {
            return Err(MethodError::in_use(
                "ElementName",
                format!("volume {name} exists"),
            ));
        }
        let path = pool.path(&format!("{name}.img"));
        let dev = open_new(&path, size)?;
        let id = cat.alloc_id();
        cat.volumes.insert(
            name.to_owned(),
            VolumeRec {
                name: name.to_owned(),
                path: path.display().to_string(),
                size,
                block_size: 512,
                pool: Some(pool.name.clone()),
                kind: VolumeKind::Created,
                exposures: Vec::new(),
                uid: new_uid(name, id),
                identity: None,
            },
        );
        self.rt()
            .volumes
            .insert(name.to_owned(), Volume::new(name, dev));
        self.save(&mut cat);
        Ok(name.to_owned())
    }

    /// DeleteVolume: refused while the volume is exposed, in a relationship or a group.
    pub fn delete_volume(&self, name: &str) -> Result<(), MethodError> {
        let mut cat = self.cat();
        let rec = cat
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| MethodError::invalid("TheElement", "no such volume"))?;
        if rec.kind == VolumeKind::Configured {
            return Err(MethodError::in_use(
                "TheElement",
                "the volume belongs to the configuration file",
            ));
        }
        if let Some(e) = rec.exposures.first() {
            return Err(MethodError::in_use(
                "TheElement",
                format!("exposed as LUN {} of {}; hide it first", e.lun, e.target),
            ));
        }
        if let Some(s) = cat
            .syncs
            .values()
            .find(|s| s.source == name || s.target == name)
        {
            return Err(MethodError::in_use(
                "TheElement",
                format!("in relationship sync:{}", s.id),
            ));
        }
        if let Some(g) = cat
            .groups
            .values()
            .find(|g| g.members.iter().any(|m| m == name))
        {
            return Err(MethodError::in_use(
                "TheElement",
                format!("member of group {}", g.name),
            ));
        }
        cat.volumes.remove(name);
        self.rt().volumes.remove(name);
        let _ = std::fs::remove_file(&rec.path);
        self.save(&mut cat);
        Ok(())
    }

    /// ExposeVolume: record an export (the server applies it).
    pub fn expose(
        &self,
        name: &str,
        target: &str,
        lun: u16,
        read_only: bool,
    ) -> Result<Exposure, MethodError> {
        let mut cat = self.cat();
        let taken = cat
            .volumes
            .values()
            .flat_map(|v| v.exposures.iter())
            .any(|e| e.target.eq_ignore_ascii_case(target) && e.lun == lun);
        if taken {
            return Err(MethodError::in_use(
                "Lun",
                format!("LUN {lun} of {target} is in use"),
            ));
        }
        let rec = cat
            .volumes
            .get_mut(name)
            .ok_or_else(|| MethodError::invalid("TheElement", "no such volume"))?;
        if rec
            .exposures
            .iter()
            .any(|e| e.target.eq_ignore_ascii_case(target))
        {
            return Err(MethodError::in_use(
                "Target",
                format!("{name} is already exposed through {target}"),
            ));
        }
        let e = Exposure {
            target: target.to_owned(),
            lun,
            read_only,
        };
        rec.exposures.push(e.clone());
        self.update_writable(&cat, name);
        self.save(&mut cat);
        Ok(e)
    }

    /// HideVolume: remove an export; returns it.
    pub fn hide(&self, name: &str, target: &str) -> Result<Exposure, MethodError> {
        let mut cat = self.cat();
        let rec = cat
            .volumes
            .get_mut(name)
            .ok_or_else(|| MethodError::invalid("TheElement", "no such volume"))?;
        let pos = rec
            .exposures
            .iter()
            .position(|e| e.target.eq_ignore_ascii_case(target))
            .ok_or_else(|| {
                MethodError::invalid("Target", format!("{name} is not exposed through {target}"))
            })?;
        let e = rec.exposures.remove(pos);
        self.update_writable(&cat, name);
        self.update_writable(&cat, name);
        self.save(&mut cat);
        Ok(e)
    }

    /// CreateGroup (a NULL name: the service names it `group<n>`). Members keep their
    /// order.
    pub fn create_group(
        &self,
        name: Option<&str>,
        members: &[String],
    ) -> Result<String, MethodError> {
        let mut cat = self.cat();
        let name = match name {
            Some(n) => n.to_owned(),
            None => loop {
                let n = format!("group{}", cat.alloc_id());
                if !cat.groups.contains_key(&n) {
                    break n;
                }
            },
        };
        if !valid_name(&name) {
            return Err(MethodError::invalid(
                "GroupName",
                "names are 1 to 64 letters, digits, '.', '_' or '-'",
            ));
        }
        if cat.groups.contains_key(&name) {
            return Err(MethodError::in_use(
                "GroupName",
                format!("group {name} exists"),
            ));
        }
        for (i, m) in members.iter().enumerate() {
            if !cat.volumes.contains_key(m) {
                return Err(MethodError::invalid("Members", format!("no volume {m}")));
            }
            if members[..i].contains(m) {
                return Err(MethodError::invalid(
                    "Members",
                    format!("{m} is listed twice"),
                ));
            }
        }
        cat.groups.insert(
            name.clone(),
            GroupRec {
                name: name.clone(),
                members: members.to_vec(),
            },
        );
        self.save(&mut cat);
        Ok(name)
    }

    /// The group relationship a group is part of.
    fn group_in_relationship(cat: &super::Catalog, name: &str) -> Option<u64> {
        cat.group_syncs
            .values()
            .find(|g| g.source_group.as_deref() == Some(name) || g.target_group == name)
            .map(|g| g.id)
    }

    /// DeleteGroup: 7 when the group is in a replication relationship; a group that is not
    /// empty needs RemoveElements (its volumes stay, only the group goes).
    pub fn delete_group(&self, name: &str, remove_elements: bool) -> Result<(), MethodError> {
        let mut cat = self.cat();
        let g = cat
            .groups
            .get(name)
            .ok_or_else(|| MethodError::invalid("ReplicationGroup", "no such group"))?;
        if let Some(id) = Self::group_in_relationship(&cat, name) {
            return Err(MethodError {
                code: ReturnCode::GroupMethod7,
                message: format!(
                    "one or more elements are in a replication relationship (sync:{id})"
                ),
                parameter: Some("ReplicationGroup".into()),
            });
        }
        if !g.members.is_empty() && !remove_elements {
            return Err(MethodError::in_use(
                "RemoveElements",
                format!(
                    "group {name} has {} members; pass RemoveElements=true to delete it anyway",
                    g.members.len()
                ),
            ));
        }
        cat.groups.remove(name);
        self.save(&mut cat);
        Ok(())
    }

    fn no_group(name: &str) -> MethodError {
        MethodError {
            code: ReturnCode::GroupMethod7,
            message: format!("group {name} does not exist"),
            parameter: Some("ReplicationGroup".into()),
        }
    }

    /// AddMembers: 7 when the group does not exist, 6 when it is in a relationship (use
    /// AddSyncPair).
    pub fn add_members(&self, group: &str, members: &[String]) -> Result<(), MethodError> {
        let mut cat = self.cat();
        if !cat.groups.contains_key(group) {
            return Err(Self::no_group(group));
        }
        if let Some(id) = Self::group_in_relationship(&cat, group) {
            return Err(MethodError::in_use(
                "ReplicationGroup",
                format!("the group is in relationship sync:{id}; add pairs with AddSyncPair"),
            ));
        }
        for m in members {
            if !cat.volumes.contains_key(m) {
                return Err(MethodError::invalid("Members", format!("no volume {m}")));
            }
        }
        if let Some(g) = cat.groups.get_mut(group) {
            for m in members {
                if !g.members.contains(m) {
                    g.members.push(m.clone());
                }
            }
        }
        self.save(&mut cat);
        Ok(())
    }

    /// RemoveMembers: 7 when the group does not exist, 8 for a member not in it, 6 when the
    /// group is in a relationship; `delete_on_empty` deletes a group left empty.
    pub fn remove_members(
        &self,
        group: &str,
        members: &[String],
        delete_on_empty: bool,
    ) -> Result<(), MethodError> {
        let mut cat = self.cat();
        let Some(g) = cat.groups.get(group) else {
            return Err(Self::no_group(group));
        };
        for m in members {
            if !g.members.contains(m) {
                return Err(MethodError {
                    code: ReturnCode::GroupMethod8,
                    message: format!("{m} is not a member of {group}"),
                    parameter: Some("Members".into()),
                });
            }
        }
        if let Some(id) = Self::group_in_relationship(&cat, group) {
            return Err(MethodError::in_use(
                "Members",
                format!("the group is in relationship sync:{id}; remove pairs with RemoveSyncPair"),
            ));
        }
        let empty = match cat.groups.get_mut(group) {
            Some(g) => {
                g.members.retain(|m| !members.contains(m));
                g.members.is_empty()
            }
            None => false,
        };
        if empty && delete_on_empty {
            cat.groups.remove(group);
        }
        self.save(&mut cat);
        Ok(())
    }
}
