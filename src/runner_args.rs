//! The runner's argument encoding: how it cuts a command line into `entryPointArgs` tokens, and the
//! Docker-mode rules that turn that command line back into the arguments a process receives.
//!
//! The runner never sends an argument list. It builds one command-line string and sends it cut at
//! single spaces, quote marks kept (actions/runner):
//! - script steps: the shell template (`bash --noprofile --norc -e -o pipefail {0}`, `pwsh -command
//!   ". '{0}'"`, a custom `shell: python3 -u {0}`...) split with `Split(' ')`, each token `Trim()`med,
//!   empty tokens kept (`ContainerHookManager.cs`);
//! - containers: a Docker action's `runs.args` as ` "a" "b c"` with `"` escaped as `\"`
//!   (`ContainerActionHandler.cs`), or the raw `with: args:` string of a `docker://` step, split the
//!   same way with empty tokens dropped (`HookInput.cs`).
//!
//! In Docker mode that string reaches `docker` through .NET's `Process` on Unix, whose argument
//! parser (`ParseArgumentsIntoList`) is what a step's arguments really mean:
//! - arguments are separated by runs of spaces and tabs outside double quotes;
//! - `"` toggles quoting and is removed; inside quotes, `""` is one literal `"`;
//! - backslashes are literal unless a `"` follows: then each pair gives one `\`, and an odd one
//!   left over makes the `"` literal;
//! - single quotes are ordinary characters.
//!
//! [`decode`] rejoins the tokens with single spaces and applies those rules, so a step gets exactly
//! the arguments Docker mode gives it. Two losses are the runner's own, before the hook sees the
//! tokens: `Trim()` strips other whitespace (tabs, newlines) at the edges of each space-separated
//! token, and for containers a run of spaces inside a quoted argument becomes one space.

/// The arguments a process receives for the runner's `entryPointArgs` tokens, as in Docker mode.
pub(crate) fn decode(tokens: &[String]) -> Vec<String> {
    parse_command_line(&tokens.join(" "))
}

/// Splits a command line with .NET's rules for `ProcessStartInfo.Arguments` on Unix.
pub(crate) fn parse_command_line(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && is_separator(chars[i]) {
            i += 1;
        }
        if i == chars.len() {
            return args;
        }
        args.push(next_argument(&chars, &mut i));
    }
}

fn is_separator(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Reads one argument starting at `*i`, leaving `*i` on the separator after it (or the end).
fn next_argument(chars: &[char], i: &mut usize) -> String {
    let mut arg = String::new();
    let mut in_quotes = false;
    while *i < chars.len() {
        let mut backslashes = 0;
        while *i < chars.len() && chars[*i] == '\\' {
            *i += 1;
            backslashes += 1;
        }
        if backslashes > 0 {
            if *i < chars.len() && chars[*i] == '"' {
                arg.extend(std::iter::repeat_n('\\', backslashes / 2));
                if backslashes % 2 == 1 {
                    arg.push('"');
                    *i += 1;
                }
            } else {
                arg.extend(std::iter::repeat_n('\\', backslashes));
            }
            continue;
        }
        let c = chars[*i];
        if c == '"' {
            if in_quotes && chars.get(*i + 1) == Some(&'"') {
                arg.push('"');
                *i += 1;
            } else {
                in_quotes = !in_quotes;
            }
            *i += 1;
            continue;
        }
        if is_separator(c) && !in_quotes {
            break;
        }
        arg.push(c);
        *i += 1;
    }
    arg
}

/// What the runner sends for a script step's argument string (`Split(' ')`, `Trim()`, empty tokens
/// kept): the model tests and fixtures are written against.
pub fn runner_script_tokens(arguments: &str) -> Vec<String> {
    arguments.split(' ').map(|t| t.trim().to_string()).collect()
}

/// What the runner sends for a container's argument string (empty tokens dropped).
pub fn runner_container_tokens(arguments: &str) -> Vec<String> {
    arguments
        .split(' ')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// The argument string the runner builds from a Docker action's `runs.args`: ` "a" "b c"`, each
/// `"` in a value written `\"`, an empty value as `""`.
pub fn runner_action_arguments(args: &[String]) -> String {
    let mut line = String::new();
    for a in args {
        if a.is_empty() {
            line.push_str(" \"\"");
        } else {
            line.push_str(&format!(" \"{}\"", a.replace('"', "\\\"")));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn net_rules() {
        // Each line: the command line, then the arguments .NET's parser gives.
        let cases: &[(&str, &[&str])] = &[
            ("a b  c", &["a", "b", "c"]),
            ("  lead and trail\t", &["lead", "and", "trail"]),
            (r#""a b" c"#, &["a b", "c"]),
            (r#"x"a b"y"#, &["xa by"]),
            (r#""say \"hi\"""#, &[r#"say "hi""#]),
            (r#""""#, &[""]),
            (r#"a "" b"#, &["a", "", "b"]),
            (r#""a""b""#, &[r#"a"b"#]),
            (r"C:\path\ x", &[r"C:\path\", "x"]),
            (r#"\\"a b""#, &[r"\a b"]),
            (r#"\\\"a"#, &[r#"\"a"#]),
            ("'single quoted' stays", &["'single", "quoted'", "stays"]),
            ("tab\there", &["tab", "here"]),
            ("ünïcödé ✓", &["ünïcödé", "✓"]),
            (r#""unterminated quote"#, &["unterminated quote"]),
            ("", &[]),
        ];
        for (line, want) in cases {
            assert_eq!(parse_command_line(line), strings(want), "{line:?}");
        }
    }

    #[test]
    fn docker_action_args_round_trip_through_the_runner() {
        let lists: &[&[&str]] = &[
            &["a b", r#"say "hi""#, ""],
            &["plain"],
            &["it's", "$HOME", "`x`", "; rm -rf /"],
            &[r"back\slash", r"trailing\", r#"both\"q"#],
            &[" lead", "trail ", "in side"],
            &["ünïcödé ✓", "日本語"],
            &["", "", ""],
        ];
        for args in lists {
            let args = strings(args);
            let tokens = runner_container_tokens(&runner_action_arguments(&args));
            let decoded = decode(&tokens);
            // The runner escapes only `"`, so a value ending in `\` swallows its closing quote in
            // Docker mode as well; that case is checked on its own below.
            if args.iter().any(|a| a.ends_with('\\') || a.contains("\\\"")) {
                continue;
            }
            assert_eq!(decoded, args, "tokens {tokens:?}");
        }
    }

    #[test]
    fn backslash_before_quote_matches_docker_mode_not_the_intent() {
        // The runner writes `trailing\` as `"trailing\"`: in Docker mode the backslash escapes the
        // closing quote, so the argument runs on. arc-hook gives the step what Docker mode gives.
        let tokens =
            runner_container_tokens(&runner_action_arguments(&strings(&[r"trailing\", "x"])));
        assert_eq!(decode(&tokens), strings(&[r#"trailing" x"#]));
    }

    #[test]
    fn runs_of_spaces_inside_container_args_are_lost_by_the_runner() {
        // The runner drops the empty tokens a run of spaces leaves, before the hook sees them.
        let tokens = runner_container_tokens(&runner_action_arguments(&strings(&["two  spaces"])));
        assert_eq!(decode(&tokens), strings(&["two spaces"]));
        // Script steps keep them, so a script path with two spaces survives.
        let tokens = runner_script_tokens(r#""/__w/_temp/a  b.sh""#);
        assert_eq!(decode(&tokens), strings(&["/__w/_temp/a  b.sh"]));
    }

    #[test]
    fn docker_step_raw_args() {
        let tokens = runner_container_tokens(r#"--flag "x y"  z"#);
        assert_eq!(tokens, strings(&["--flag", "\"x", "y\"", "z"]));
        assert_eq!(decode(&tokens), strings(&["--flag", "x y", "z"]));
    }

    #[test]
    fn script_step_shells() {
        let pwsh = runner_script_tokens(r#"-command ". '/__w/_temp/a b.ps1'""#);
        assert_eq!(
            decode(&pwsh),
            strings(&["-command", ". '/__w/_temp/a b.ps1'"])
        );
        let bash = runner_script_tokens("--noprofile --norc -e -o pipefail /__w/_temp/x.sh");
        assert_eq!(
            decode(&bash),
            strings(&[
                "--noprofile",
                "--norc",
                "-e",
                "-o",
                "pipefail",
                "/__w/_temp/x.sh"
            ])
        );
        // A custom shell with two spaces keeps an empty token; Docker mode ignores it.
        let custom = runner_script_tokens("-u  {0}");
        assert_eq!(custom, strings(&["-u", "", "{0}"]));
        assert_eq!(decode(&custom), strings(&["-u", "{0}"]));
    }
}
