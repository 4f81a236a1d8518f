//! The configuration loader: YAML text to settings, then every check and default.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(settings) = promlink::config::Settings::from_yaml(text) {
        // Either a configuration or a list of problems; never a panic.
        match settings.resolve() {
            Ok(cfg) => drop(format!("{cfg:?}")),
            Err(e) => assert!(!e.0.is_empty(), "an error without a problem"),
        }
    }
});
