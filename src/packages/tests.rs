use super::*;

fn spec(apt: &[&str], conda: &[&str], pip: &[&str]) -> PackageSpec {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    PackageSpec {
        base: "debian:bookworm".into(),
        apt: v(apt),
        conda: v(conda),
        pip: v(pip),
        gpu_base: None,
    }
}

#[test]
fn apt_names_and_pins() {
    for ok in [
        "jq",
        "libc6:amd64",
        "curl=7.88.1-10+deb12u5",
        "pkg=1.2*",
        "g++",
        "jq/bookworm-backports",
        "python3.11",
    ] {
        AptPackage::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "J", "jq;rm", "-o=foo", "jq=", "jq=abc", "j q", "$(id)", "jq:", "jq/`x`", "x",
    ] {
        assert!(AptPackage::parse(bad).is_err(), "{bad} accepted");
    }
    let p = AptPackage::parse("curl:amd64=7.88*").unwrap();
    assert_eq!(p.arg(), "curl:amd64=7.88*");
}

#[test]
fn pip_requirements_follow_pep_508() {
    for ok in [
        "six==1.16.0",
        "requests[security,socks]>=2.8.1,==2.8.*",
        "name>=3,<2",
        "A.B-C_D",
        "pip @ https://github.com/pypa/pip/archive/1.3.1.zip#sha1=da9234ee9982d4bbb3c72346a6de940a148ea686",
        "name[quux, strange];python_version<'2.7' and platform_version=='2'",
        "name; os_name=='a' or os_name=='b'",
        "name (>=1.0, <2.0)",
        "numpy~=1.26",
        "tomli; python_version < \"3.11\"",
    ] {
        Requirement::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "-r requirements.txt",
        "--index-url=https://evil.example.com",
        "six==1.16.0; rm -rf /",
        "six===",
        "six=1.0",
        "six @ ftp://x",
        "six; python_version < '3' $(id)",
        "_six",
        "six[a b]",
        "six==1.0 && id",
    ] {
        assert!(Requirement::parse(bad).is_err(), "{bad} accepted");
    }
    let r = Requirement::parse("requests[security]>=2.8.1,<3 ; python_version >= '3.8'").unwrap();
    assert_eq!(r.name, "requests");
    assert_eq!(r.extras, ["security"]);
    assert_eq!(r.specifiers[0], (">=".into(), "2.8.1".into()));
    assert_eq!(r.marker.as_deref(), Some("python_version >= '3.8'"));
}

/// conda's documented examples (user guide "Package search and install specifications", the
/// MatchSpec docstring): each parses into the parts conda gives it.
#[test]
fn conda_match_specs_from_condas_documentation() {
    let ms = |s: &str| MatchSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    let n = ms("numpy");
    assert_eq!((n.name.as_str(), n.version.as_deref()), ("numpy", None));
    assert_eq!(ms("numpy 1.8*").version.as_deref(), Some("1.8*"));
    assert_eq!(ms("numpy=1.17.*").version.as_deref(), Some("1.17.*"));
    assert_eq!(
        ms("numpy>1.17,<1.19.2").version.as_deref(),
        Some(">1.17,<1.19.2")
    );
    assert_eq!(
        ms("numpy >=1.8,<2|1.9").version.as_deref(),
        Some(">=1.8,<2|1.9")
    );
    let b = ms("numpy 1.17.3 py38*");
    assert_eq!(
        (b.version.as_deref(), b.build.as_deref()),
        (Some("1.17.3"), Some("py38*"))
    );
    let e = ms("numpy=1.8.1=py27_0");
    assert_eq!(
        (e.version.as_deref(), e.build.as_deref()),
        (Some("1.8.1"), Some("py27_0"))
    );
    let e = ms("foo==1.0=py27_0");
    assert_eq!(
        (e.version.as_deref(), e.build.as_deref()),
        (Some("==1.0"), Some("py27_0"))
    );
    let c = ms("conda-forge::numpy==1.17*");
    assert_eq!(c.channel.as_deref(), Some("conda-forge"));
    assert_eq!(
        (c.name.as_str(), c.version.as_deref()),
        ("numpy", Some("==1.17*"))
    );
    let s = ms("conda-forge/linux-64::foo>=1.0");
    assert_eq!(
        (s.channel.as_deref(), s.subdir.as_deref()),
        (Some("conda-forge"), Some("linux-64"))
    );
    assert_eq!(s.version.as_deref(), Some(">=1.0"));
    let w = ms("*/linux-64::foo>=1.0");
    assert_eq!((w.channel, w.subdir.as_deref()), (None, Some("linux-64")));
    let m = ms("main/noarch::tzdata");
    assert_eq!(
        (m.channel.as_deref(), m.subdir.as_deref()),
        (Some("main"), Some("noarch"))
    );
    let k = ms("conda-forge::foo[version=1.0.*]");
    assert_eq!(k.brackets, [("version".to_string(), "1.0.*".to_string())]);
    let k = ms("numpy[version='>1.17,<1.19.2', build=py38*]");
    assert_eq!(k.brackets[0].1, ">1.17,<1.19.2");
    assert_eq!(ms("*[name=foo]").brackets[0], ("name".into(), "foo".into()));
    assert_eq!(ms("foo[build_number=2]").brackets[0].1, "2");
    let u = ms("https://conda.anaconda.org/conda-forge::numpy");
    assert_eq!(
        u.channel.as_deref(),
        Some("https://conda.anaconda.org/conda-forge")
    );
    let ns = ms("conda-forge:pypi:requests");
    assert_eq!(ns.namespace.as_deref(), Some("pypi"));
    assert_eq!(ms("python >= 3.8").version.as_deref(), Some(">=3.8"));
    for bad in [
        "numpy;id",
        "numpy 1 2 3",
        "numpy[version=$(id)]",
        "numpy[evil=1]",
        "ch:numpy",
        "*py*",
        "num py=1'",
    ] {
        assert!(MatchSpec::parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn conda_lines_take_channels() {
    let l = CondaLine::parse("-c conda-forge::numpy==1.17*").unwrap();
    assert_eq!(l.channels, ["conda-forge"]);
    assert_eq!(l.spec.unwrap().name, "numpy");
    let l = CondaLine::parse("-c conda-forge").unwrap();
    assert_eq!(
        (l.channels.as_slice(), l.spec),
        (&["conda-forge".to_string()][..], None)
    );
    let l = CondaLine::parse("--channel bioconda samtools 1.19").unwrap();
    assert_eq!(l.spec.unwrap().version.as_deref(), Some("1.19"));
    assert!(CondaLine::parse("--override-channels numpy").is_err());
    assert!(CondaLine::parse("-c").is_err());
}

#[test]
fn bad_lines_are_named() {
    let e = spec(&["jq", "curl; rm -rf /"], &[], &[])
        .validate()
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("packages.apt line 2") && text.contains("curl; rm -rf /"),
        "{text}"
    );
    let e = spec(&[], &[], &["six==1.16.0", "ok\nRUN id"])
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("packages.pip line 2"), "{e}");
    let e = spec(&[], &["numpy", "-c x::y z::w"], &[]).validate();
    assert!(e.is_err());
    assert_eq!(
        spec(&[], &[], &[]).validate().unwrap_err(),
        PackageError::Nothing
    );
    let mut s = spec(&["jq"], &[], &[]);
    s.base = "debian\nRUN id".into();
    assert!(matches!(s.validate(), Err(PackageError::BadBase { .. })));
    s.base = String::new();
    assert_eq!(s.validate().unwrap_err(), PackageError::NoBase);
}

#[test]
fn the_dockerfile_follows_each_tools_practice_and_quotes_everything() {
    let s = spec(
        &["jq", "# a comment", "", "curl=7.88*"],
        &["-c conda-forge::numpy==1.17*", "python 3.11.*"],
        &["six==1.16.0", "tomli; python_version < '3.11'"],
    );
    let df = s.dockerfile(&s.base).unwrap();
    assert!(df.contains("FROM debian:bookworm\n"), "{df}");
    assert!(df.contains("--mount=type=cache,target=/var/cache/apt,sharing=locked"));
    assert!(df.contains("--mount=type=cache,target=/var/lib/apt/lists,sharing=locked"));
    assert!(df.contains("apt-get update"));
    assert!(df.contains("apt-get install -y --no-install-recommends"));
    assert!(df.contains("'jq' 'curl=7.88*'"), "{df}");
    assert!(
        df.contains("-c 'conda-forge' 'conda-forge::numpy==1.17*' 'python 3.11.*'"),
        "{df}"
    );
    assert!(df.contains("micromamba") && df.contains("exit 127"));
    assert!(
        df.contains(r#"'six==1.16.0' 'tomli; python_version < '"'"'3.11'"'"''"#),
        "{df}"
    );
    assert_eq!(df.matches("apt-get update").count(), 1);
    // The generated text is a Dockerfile kiln parses and plans.
    let parsed = crate::dockerfile::parse(&df, "Dockerfile").unwrap();
    assert_eq!(parsed.stages.len(), 1, "{df}");
    assert_eq!(parsed.stages[0].instructions.len(), 3, "{df}");
}

#[test]
fn gpu_base_defaults_to_base() {
    let mut s = spec(&["jq"], &[], &[]);
    assert_eq!(s.gpu_base(), "debian:bookworm");
    s.gpu_base = Some("nvidia/cuda:12.4.1-base-ubuntu22.04".into());
    let df = s.dockerfile(s.gpu_base()).unwrap();
    assert!(df.contains("FROM nvidia/cuda:12.4.1-base-ubuntu22.04\n"));
}

#[test]
fn shell_quote_is_one_word() {
    assert_eq!(shell_quote("a'b"), r#"'a'"'"'b'"#);
    assert_eq!(shell_quote("$(id)"), "'$(id)'");
}
