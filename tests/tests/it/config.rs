//! Configuration: precedence, bad values, `config print`.

use mainstay_tests::Api;

#[test]
fn environment_overrides_file_which_overrides_defaults() -> anyhow::Result<()> {
    let (status, out, err) = Api::builder()
        .config_toml("[server]\nrequest_timeout = \"7s\"\nbody_limit_bytes = 1234\n")
        .env("MAINSTAY_SERVER__BODY_LIMIT_BYTES", "4321")
        .args(&["config", "print"])
        .run()?;
    assert!(status.success(), "config print failed: {err}");
    // From the file, not overridden.
    assert!(
        out.contains("server.request_timeout = \"7s\"  # TOML file"),
        "{out}"
    );
    // The environment beats the file.
    assert!(
        out.contains("server.body_limit_bytes = 4321  # `MAINSTAY_` environment"),
        "{out}"
    );
    // Untouched keys keep their defaults.
    assert!(
        out.contains("shutdown.timeout = \"25s\"  # default"),
        "{out}"
    );
    Ok(())
}

#[test]
fn config_print_masks_secrets() -> anyhow::Result<()> {
    let (status, out, err) = Api::builder()
        .env("MAINSTAY_ADMIN__TOKEN", "a-very-secret-admin-token")
        .args(&["config", "print"])
        .run()?;
    assert!(status.success(), "{err}");
    assert!(!out.contains("a-very-secret-admin-token"), "{out}");
    assert!(out.contains("admin.token = \"[REDACTED]\""), "{out}");
    Ok(())
}

#[test]
fn bad_values_exit_2_naming_key_value_and_what_is_allowed() -> anyhow::Result<()> {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "MAINSTAY_SERVER__ADDR",
            "not-an-address",
            &["server.addr", "not-an-address"],
        ),
        (
            "MAINSTAY_TELEMETRY__LOG_FORMAT",
            "xml",
            &["telemetry.log_format", "xml", "json"],
        ),
        (
            "MAINSTAY_SHUTDOWN__TIMEOUT",
            "soon",
            &["shutdown.timeout", "soon"],
        ),
        (
            "MAINSTAY_SERVER__BODY_LIMIT_BYTES",
            "0",
            &["server.body_limit_bytes", "positive"],
        ),
        (
            "MAINSTAY_ADMIN__TOKEN",
            "short",
            &["admin.token", "16 characters"],
        ),
        ("MAINSTAY_SERVER__NO_SUCH_KEY", "1", &["no_such_key"]),
    ];
    for (key, value, expected) in cases {
        let (status, _, err) = Api::builder().env(key, value).run()?;
        assert_eq!(
            status.code(),
            Some(2),
            "{key}={value} should exit 2; stderr: {err}"
        );
        for needle in *expected {
            assert!(
                err.contains(needle),
                "{key}={value}: stderr should name {needle:?}: {err}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_missing_config_file_is_an_error() -> anyhow::Result<()> {
    let (status, _, err) = Api::builder()
        .args(&["--config", "/nonexistent/mainstay.toml"])
        .run()?;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/mainstay.toml"), "{err}");
    Ok(())
}

#[test]
fn with_no_configuration_it_listens_on_the_default_address_and_says_so() -> anyhow::Result<()> {
    let (status, out, err) = Api::builder()
        .default_addr()
        .args(&["config", "print"])
        .run()?;
    assert!(status.success(), "{err}");
    assert!(
        out.contains("server.addr = \"127.0.0.1:8080\"  # default"),
        "{out}"
    );
    Ok(())
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused_with_a_clear_error() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_string_lossy().into_owned();
    let _first = Api::builder()
        .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir)
        .start()?;
    let (status, out, err) = Api::builder()
        .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir)
        .run()?;
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let printed = format!("{out}{err}");
    assert!(
        printed.contains("could not open the dead-letter queue") && printed.contains("lock"),
        "{printed}"
    );
    Ok(())
}
