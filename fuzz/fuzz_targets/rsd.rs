//! CIM_ReplicationSettingData parsing: `ReplicationSettings::from_json` on any JSON the input
//! holds (and on the input as a JSON string), `from_cim_xml` on the input as text (plain and
//! escaped). Parsing must never panic, and the same instance must give the same settings
//! whether it comes as CIM-XML text or as a JSON string holding it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replication::service::ReplicationSettings;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = ReplicationSettings::from_json(&v);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let xml = ReplicationSettings::from_cim_xml(text);
    let via_json = ReplicationSettings::from_json(&Value::String(text.to_owned()));
    assert_eq!(
        xml, via_json,
        "CIM-XML text and a JSON string holding it differ"
    );
    // The escaped form of a plain instance parses the same.
    if text.trim_start().starts_with("<INSTANCE") && !text.contains('&') {
        let escaped = text
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        assert_eq!(
            ReplicationSettings::from_cim_xml(&escaped).ok(),
            xml.clone().ok(),
            "escaped CIM-XML parses differently"
        );
    }
});
