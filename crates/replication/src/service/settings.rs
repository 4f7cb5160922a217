//! CIM_ReplicationSettingData: accepted as a JSON object of properties or as the CIM-XML
//! `<INSTANCE CLASSNAME="CIM_ReplicationSettingData">` string (escaped or not). Unknown
//! properties are ignored; values outside a property's ValueMap are refused.

use serde_json::Value;

/// The settings ironlun acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// ConsistentPointInTime: cut a group at one point in time.
    pub consistent_point_in_time: Option<bool>,
    /// DesiredCopyMethodology.
    pub desired_copy_methodology: Option<u16>,
    /// CopyPriority: 0 not managed, 1 low, 2 same, 3 high, 4 urgent.
    pub copy_priority: Option<u16>,
    /// CopyRecoveryMode: 2 automatic, 3 manual, 4 implementation decides.
    pub copy_recovery_mode: Option<u16>,
    /// Pairing: 2 instrumentation decides, 3 exact order, 4 optimum.
    pub pairing: Option<u16>,
    /// UnequalGroupsAction: 2 error, 3 source larger allowed, 4 target larger allowed.
    pub unequal_groups_action: Option<u16>,
    /// TargetElementSupplier: 1 use existing, 2 create new, 3 use and create,
    /// 4 instrumentation decides, 5 client must supply.
    pub target_element_supplier: Option<u16>,
    /// ThinProvisioningPolicy (2..7).
    pub thin_provisioning_policy: Option<u16>,
    /// OnGroupOrListError: 2 continue, 3 stop.
    pub on_group_or_list_error: Option<u16>,
}

/// Why settings were refused: the message names the property.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

fn check(name: &str, v: u16, allowed: &[u16]) -> Result<u16, SettingsError> {
    if allowed.contains(&v) {
        Ok(v)
    } else {
        Err(SettingsError(format!(
            "{name}={v} is outside its ValueMap {allowed:?}"
        )))
    }
}

impl ReplicationSettings {
    /// Parse a JSON value: an object of properties, or a string holding a CIM-XML instance.
    pub fn from_json(v: &Value) -> Result<Self, SettingsError> {
        match v {
            Value::Null => Ok(Self::default()),
            Value::Object(map) => {
                let mut props = Vec::new();
                for (k, v) in map {
                    let s = match v {
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        Value::String(s) => s.clone(),
                        Value::Null => continue,
                        _ => return Err(SettingsError(format!("{k} must be a scalar"))),
                    };
                    props.push((k.clone(), s));
                }
                Self::from_props(&props)
            }
            Value::String(s) => Self::from_cim_xml(s),
            _ => Err(SettingsError(
                "ReplicationSettingData must be an object or a string".into(),
            )),
        }
    }

    /// Parse the CIM-XML INSTANCE text.
    pub fn from_cim_xml(text: &str) -> Result<Self, SettingsError> {
        let text = if text.trim_start().starts_with("&lt;") {
            unescape(text)
        } else {
            text.to_owned()
        };
        let t = text.trim();
        if !t.starts_with("<INSTANCE") {
            return Err(SettingsError("expected an <INSTANCE> element".into()));
        }
        let class = attr(t, "CLASSNAME").unwrap_or_default();
        if !class.eq_ignore_ascii_case("CIM_ReplicationSettingData")
            && !class.ends_with("_ReplicationSettingData")
        {
            return Err(SettingsError(format!(
                "instance of {class:?}, not CIM_ReplicationSettingData"
            )));
        }
        let mut props = Vec::new();
        let mut rest = t;
        while let Some(i) = rest.find("<PROPERTY") {
            rest = &rest[i..];
            let end = rest
                .find("</PROPERTY>")
                .ok_or_else(|| SettingsError("unterminated <PROPERTY>".into()))?;
            let p = &rest[..end];
            let name =
                attr(p, "NAME").ok_or_else(|| SettingsError("<PROPERTY> without NAME".into()))?;
            if let (Some(a), Some(b)) = (p.find("<VALUE>"), p.find("</VALUE>"))
                && a + 7 <= b
            {
                props.push((name, unescape(&p[a + 7..b]).trim().to_owned()));
            }
            rest = &rest[end + "</PROPERTY>".len()..];
        }
        Self::from_props(&props)
    }

    fn from_props(props: &[(String, String)]) -> Result<Self, SettingsError> {
        let mut s = Self::default();
        let num = |name: &str, v: &str| -> Result<u16, SettingsError> {
            v.parse::<u16>()
                .map_err(|_| SettingsError(format!("{name} must be a uint16, not {v:?}")))
        };
        for (k, v) in props {
            match k.as_str() {
                "ConsistentPointInTime" => {
                    s.consistent_point_in_time = Some(match v.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(SettingsError(format!(
                                "ConsistentPointInTime must be a boolean, not {v:?}"
                            )));
                        }
                    })
                }
                "DesiredCopyMethodology" => {
                    s.desired_copy_methodology =
                        Some(check(k, num(k, v)?, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])?)
                }
                "CopyPriority" => s.copy_priority = Some(check(k, num(k, v)?, &[0, 1, 2, 3, 4])?),
                "CopyRecoveryMode" => {
                    s.copy_recovery_mode = Some(check(k, num(k, v)?, &[0, 2, 3, 4])?)
                }
                "Pairing" => s.pairing = Some(check(k, num(k, v)?, &[2, 3, 4])?),
                "UnequalGroupsAction" => {
                    s.unequal_groups_action = Some(check(k, num(k, v)?, &[2, 3, 4])?)
                }
                "TargetElementSupplier" => {
                    s.target_element_supplier = Some(check(k, num(k, v)?, &[1, 2, 3, 4, 5])?)
                }
                "ThinProvisioningPolicy" => {
                    s.thin_provisioning_policy = Some(check(k, num(k, v)?, &[2, 3, 4, 5, 6, 7])?)
                }
                "OnGroupOrListError" => {
                    s.on_group_or_list_error = Some(check(k, num(k, v)?, &[2, 3])?)
                }
                // Other CIM_ReplicationSettingData properties are accepted and ignored.
                _ => {}
            }
        }
        Ok(s)
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let head = &tag[..tag.find('>').unwrap_or(tag.len())];
    let key = format!("{name}=\"");
    let i = head.find(&key)? + key.len();
    let j = head[i..].find('"')? + i;
    Some(head[i..j].to_owned())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<INSTANCE CLASSNAME="CIM_ReplicationSettingData">
  <PROPERTY NAME="ConsistentPointInTime" TYPE="boolean"><VALUE>TRUE</VALUE></PROPERTY>
  <PROPERTY NAME="DesiredCopyMethodology" TYPE="uint16"><VALUE>6</VALUE></PROPERTY>
  <PROPERTY NAME="UnequalGroupsAction" TYPE="uint16"><VALUE>2</VALUE></PROPERTY>
  <PROPERTY NAME="ElementName" TYPE="string"><VALUE>x</VALUE></PROPERTY>
</INSTANCE>"#;

    #[test]
    fn cim_xml_plain_and_escaped() {
        let want = ReplicationSettings {
            consistent_point_in_time: Some(true),
            desired_copy_methodology: Some(6),
            unequal_groups_action: Some(2),
            ..Default::default()
        };
        assert_eq!(ReplicationSettings::from_cim_xml(XML).unwrap(), want);
        let escaped = XML
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        assert_eq!(ReplicationSettings::from_cim_xml(&escaped).unwrap(), want);
    }

    #[test]
    fn json_object_and_errors() {
        let v =
            serde_json::json!({"CopyPriority": 1, "ConsistentPointInTime": false, "Other": "x"});
        let s = ReplicationSettings::from_json(&v).unwrap();
        assert_eq!(
            (s.copy_priority, s.consistent_point_in_time),
            (Some(1), Some(false))
        );
        let bad = serde_json::json!({"CopyPriority": 9});
        assert!(
            ReplicationSettings::from_json(&bad)
                .unwrap_err()
                .0
                .contains("CopyPriority")
        );
        assert!(
            ReplicationSettings::from_cim_xml("<INSTANCE CLASSNAME=\"CIM_Foo\"></INSTANCE>")
                .is_err()
        );
        assert!(ReplicationSettings::from_cim_xml("garbage").is_err());
        assert!(
            ReplicationSettings::from_cim_xml(
                "<INSTANCE CLASSNAME=\"CIM_ReplicationSettingData\"><PROPERTY NAME=\"X\">"
            )
            .is_err()
        );
    }
}
