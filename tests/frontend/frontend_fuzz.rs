//! Property tests: no input makes the lexer, parser, expander or planner panic.

use kiln::dockerfile::shell::{EnvList, Lex};
use kiln::plan::{plan, NoBaseImages, PlanOptions};
use proptest::prelude::*;

fn dockerfile_like() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("FROM alpine AS a".to_string()),
        Just("FROM a".to_string()),
        Just("ARG X=${Y:-1}".to_string()),
        Just("RUN <<EOF".to_string()),
        Just("EOF".to_string()),
        Just("COPY --from=a <<-X /x".to_string()),
        Just("# escape=`".to_string()),
        Just("ENV a=\"b c\" d".to_string()),
        "[ -~\\t]{0,40}".prop_map(|s| s),
        "(RUN|COPY|ENV|ARG|FROM|EXPOSE|WORKDIR|HEALTHCHECK|ONBUILD|LABEL) [ -~]{0,30}"
            .prop_map(|s| s),
    ];
    prop::collection::vec(
        (line, prop_oneof![Just("\n"), Just("\r\n"), Just(" \\\n")]),
        0..12,
    )
    .prop_map(|v| v.into_iter().map(|(l, e)| format!("{l}{e}")).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn parse_and_plan_never_panic(text in dockerfile_like()) {
        if let Ok(df) = kiln::dockerfile::parse(&text, "Dockerfile") {
            let _ = plan(&df, &PlanOptions::default(), &NoBaseImages).map(|p| p.render_text());
        }
    }

    #[test]
    fn expander_never_panics(word in "[-a-zA-Z0-9${}:+?#%/'\"\\\\` *_.]{0,40}") {
        let mut env = EnvList::default();
        env.set("A", "a/b.c");
        env.set("E", "");
        for esc in ['\\', '`'] {
            let mut lex = Lex::new(esc);
            let _ = lex.process(&word, &env);
            lex.raw_quotes = true;
            lex.raw_escapes = true;
            let _ = lex.process_words(&word, &env);
        }
    }

    #[test]
    fn ignore_never_panics(text in "[-a-z*?!\\[\\]/.\\\\\n]{0,40}", path in "[a-z/.]{0,20}") {
        if let Ok(d) = kiln::context::ignore::DockerIgnore::parse(&text) {
            let _ = d.is_excluded(&path);
        }
    }
}
