//! Splits an options string into words with the POSIX shell's quoting rules, as docker users write them.

use super::OptionsError;

/// Splits `s` into words: blanks separate words; `'...'` is literal; inside `"..."` a backslash
/// escapes only `$`, `` ` ``, `"`, `\` and newline; outside quotes a backslash escapes any
/// character. No variable expansion happens (the runner has already expanded `${{ }}`).
pub(crate) fn split_words(s: &str) -> Result<Vec<String>, OptionsError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A quoted empty string ("") is a word of its own, so "in a word" is tracked apart from `word`.
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(unterminated('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(c @ ('$' | '`' | '"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(unterminated('"')),
                        },
                        Some(c) => word.push(c),
                        None => return Err(unterminated('"')),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => {
                    return Err(OptionsError::Syntax(
                        "the options end with a lone backslash".into(),
                    ));
                }
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn unterminated(quote: char) -> OptionsError {
    OptionsError::Syntax(format!("a {quote} quote is never closed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<String> {
        split_words(s).expect("valid words")
    }

    #[test]
    fn blanks_separate_words() {
        assert_eq!(
            ok("  --cpus 4\t--memory=8g \n -e A=1 "),
            ["--cpus", "4", "--memory=8g", "-e", "A=1"]
        );
        assert!(ok("").is_empty());
        assert!(ok("   ").is_empty());
    }

    #[test]
    fn quotes_group_and_disappear() {
        assert_eq!(
            ok(r#"-e "A=x y" -e 'B=$HOME "q"'"#),
            ["-e", "A=x y", "-e", r#"B=$HOME "q""#]
        );
        assert_eq!(ok(r#"--env=A="1 2"3"#), ["--env=A=1 23"]);
        assert_eq!(ok(r#"-e "" x"#), ["-e", "", "x"]);
        assert_eq!(ok("''"), [""]);
    }

    #[test]
    fn backslashes_follow_the_shell() {
        assert_eq!(ok(r"a\ b c"), ["a b", "c"]);
        assert_eq!(ok(r#""a\"b\\c\$d\e""#), [r#"a"b\c$d\e"#]);
        assert_eq!(ok(r"'a\b'"), [r"a\b"]);
        assert_eq!(ok("--cpus \\\n 4"), ["--cpus", "4"]);
        assert_eq!(ok(r"\'x"), ["'x"]);
    }

    #[test]
    fn unbalanced_input_is_refused() {
        assert_eq!(
            split_words("-e 'A=1").expect_err("open quote").to_string(),
            "a ' quote is never closed"
        );
        assert_eq!(
            split_words(r#"-e "A=1"#)
                .expect_err("open quote")
                .to_string(),
            "a \" quote is never closed"
        );
        assert_eq!(
            split_words(r"--cpus 4 \")
                .expect_err("backslash")
                .to_string(),
            "the options end with a lone backslash"
        );
    }
}
