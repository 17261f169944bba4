//! Docker's documented `.dockerignore` examples (docs.docker.com/build/concepts/context/#dockerignore-files).

use kiln::context::ignore::{ignore_file_for, DockerIgnore, IgnoreError};

fn ig(text: &str) -> DockerIgnore {
    DockerIgnore::parse(text).unwrap()
}

#[test]
fn documented_example_file() {
    let d = ig("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
    // */temp*: files and dirs starting with temp in any immediate subdirectory of the root
    assert!(d.is_excluded("somedir/temporary.txt"));
    assert!(d.is_excluded("somedir/temp"));
    // */*/temp*: two levels below the root
    assert!(d.is_excluded("somedir/subdir/temporary.txt"));
    // temp?: one character extension of temp in the root
    assert!(d.is_excluded("tempa"));
    assert!(d.is_excluded("tempb"));
    assert!(!d.is_excluded("temp"));
    assert!(
        !d.is_excluded("temporary.txt"),
        "root-level temporary.txt is not matched by */temp*"
    );
    assert!(
        !d.is_excluded("a/b/c/temp1"),
        "patterns are anchored: three levels is not matched"
    );
    // the comment line is ignored
    assert_eq!(d.patterns(), vec!["*/temp*", "*/*/temp*", "temp?"]);
}

#[test]
fn double_star_matches_any_number_of_directories() {
    let d = ig("**/*.go\n");
    assert!(d.is_excluded("main.go"));
    assert!(d.is_excluded("a/b/c/main.go"));
    assert!(!d.is_excluded("a/main.rs"));
}

#[test]
fn exclamation_reincludes_and_last_match_wins() {
    let d = ig("*.md\n!README.md\n");
    assert!(d.is_excluded("CHANGELOG.md"));
    assert!(!d.is_excluded("README.md"));

    let d = ig("*.md\n!README*.md\nREADME-secret.md\n");
    assert!(
        d.is_excluded("README-secret.md"),
        "excluded again by the later pattern"
    );
    assert!(!d.is_excluded("README-public.md"));

    let d = ig("*.md\nREADME-secret.md\n!README*.md\n");
    assert!(
        !d.is_excluded("README-secret.md"),
        "the last matching pattern re-includes it"
    );
}

#[test]
fn paths_are_anchored_and_cleaned_not_gitignore() {
    let d = ig("/foo/./bar/../baz\nnode_modules\n");
    assert!(d.is_excluded("foo/baz"));
    assert!(d.is_excluded("node_modules"));
    assert!(
        d.is_excluded("node_modules/x/y.js"),
        "a matching parent directory excludes its contents"
    );
    assert!(
        !d.is_excluded("web/node_modules"),
        "unlike gitignore, a bare name does not match at any depth"
    );
}

#[test]
fn dockerfile_and_dockerignore_can_be_excluded() {
    let d = ig(".dockerignore\nDockerfile\n");
    assert!(d.is_excluded("Dockerfile"));
    assert!(d.is_excluded(".dockerignore"));
    assert!(!d.is_excluded("src/Dockerfile"));
}

#[test]
fn star_does_not_cross_directories_and_question_is_one_char() {
    let d = ig("*.txt\ndata/?.csv\n");
    assert!(d.is_excluded("a.txt"));
    assert!(!d.is_excluded("dir/a.txt"));
    assert!(d.is_excluded("data/1.csv"));
    assert!(!d.is_excluded("data/10.csv"));
}

#[test]
fn character_classes_and_escapes() {
    let d = ig("file[0-9].log\nlit\\*\n");
    assert!(d.is_excluded("file3.log"));
    assert!(!d.is_excluded("filex.log"));
    assert!(d.is_excluded("lit*"));
    assert!(!d.is_excluded("litx"));
}

#[test]
fn bad_patterns_are_errors() {
    assert_eq!(
        DockerIgnore::parse("!\n"),
        Err(IgnoreError::IllegalExclusion("!".into()))
    );
    assert!(matches!(
        DockerIgnore::parse("a[\n"),
        Err(IgnoreError::BadPattern(_))
    ));
}

#[test]
fn dockerfile_specific_ignore_file_takes_precedence() {
    assert_eq!(
        ignore_file_for("Dockerfile"),
        [
            "Dockerfile.dockerignore".to_string(),
            ".dockerignore".to_string(),
            // podman/buildah's name, only when neither Docker name exists.
            ".containerignore".to_string()
        ]
    );
    assert_eq!(
        ignore_file_for("build/app.Dockerfile")[0],
        "build/app.Dockerfile.dockerignore"
    );
}
