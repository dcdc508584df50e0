//! The runner's file commands (GITHUB_ENV, GITHUB_OUTPUT...): `name=value` and `name<<DELIMITER` blocks, as the runner parses them.

/// Parses a file-command file into `(name, value)` pairs, in order.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let heredoc = line.find("<<");
        let eq = line.find('=');
        match (heredoc, eq) {
            (Some(h), e) if e.is_none_or(|e| h < e) => {
                let name = &line[..h];
                let delim = &line[h + 2..];
                if name.is_empty() || delim.is_empty() {
                    return Err(format!("invalid file command line {line:?}"));
                }
                let mut value = Vec::new();
                loop {
                    match lines.next() {
                        Some(l) if l == delim => break,
                        Some(l) => value.push(l),
                        None => return Err(format!("{name}: delimiter {delim:?} not found")),
                    }
                }
                out.push((name.to_string(), value.join("\n")));
            }
            (_, Some(e)) => {
                if e == 0 {
                    return Err(format!("invalid file command line {line:?}"));
                }
                out.push((line[..e].to_string(), line[e + 1..].to_string()));
            }
            _ => return Err(format!("invalid file command line {line:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms() {
        let text = "a=1\nMULTI<<EOF\nline 1\nline=2\nEOF\nb=x=y\n\n";
        assert_eq!(
            parse(text).expect("valid"),
            vec![
                ("a".to_string(), "1".to_string()),
                ("MULTI".to_string(), "line 1\nline=2".to_string()),
                ("b".to_string(), "x=y".to_string()),
            ]
        );
    }

    #[test]
    fn errors() {
        assert!(parse("X<<EOF\nno end\n").is_err());
        assert!(parse("novalue\n").is_err());
        assert!(parse("=v\n").is_err());
    }
}
