//! The README's configuration table and src/config.rs agree: every variable config.rs reads has
//! a row, and every row names a variable config.rs reads (or, said so in the row, the wrapper).

use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Whether `word` has the shape of an environment variable's name (`ARC_HOOK_LOG`, `HOME`).
fn is_variable_name(word: &str) -> bool {
    word.len() >= 3
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The variables config.rs reads: each is a string literal in it outside its unit tests (it
/// reads them as `get("NAME")`, `seconds("NAME", …)`, `flag("NAME")` and names them in its errors).
fn read_by_config() -> BTreeSet<String> {
    let source = read("src/config.rs");
    let code = source
        .split("#[cfg(test)]")
        .next()
        .expect("split yields one piece");
    code.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| is_variable_name(s))
        .map(str::to_string)
        .collect()
}

/// One row of the table: the variables of its first cell and the rest of the row.
struct Row {
    variables: Vec<String>,
    text: String,
}

/// The rows of the table under `## Configuration`, up to the next heading.
fn table_rows() -> Vec<Row> {
    let readme = read("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("the README has a `## Configuration` section");
    let section = section.split("\n#").next().expect("split yields one piece");
    let rows: Vec<Row> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let variables = cells[0]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            Row {
                variables,
                text: l.to_string(),
            }
        })
        .collect();
    assert!(!rows.is_empty(), "no table rows in README's Configuration");
    rows
}

#[test]
fn every_variable_config_reads_has_a_row_in_the_readme() {
    let in_table: BTreeSet<String> = table_rows().into_iter().flat_map(|r| r.variables).collect();
    let config_reads = read_by_config();
    // A sanity floor: the parse found config.rs's variables at all.
    assert!(
        config_reads.contains("ACTIONS_RUNNER_POD_NAME"),
        "{config_reads:?}"
    );
    let missing: Vec<&String> = config_reads.difference(&in_table).collect();
    assert!(
        missing.is_empty(),
        "src/config.rs reads {missing:?}, which README's Configuration table does not list"
    );
}

#[test]
fn every_row_of_the_readme_table_is_a_variable_that_is_read() {
    let config_reads = read_by_config();
    let wrapper = read("scripts/arc-hook.sh");
    let mut unread = Vec::new();
    for row in table_rows() {
        assert!(
            !row.variables.is_empty(),
            "a row names no variable: {}",
            row.text
        );
        for v in &row.variables {
            assert!(
                is_variable_name(v),
                "`{v}` is no variable name: {}",
                row.text
            );
            let by_wrapper =
                row.text.contains("`scripts/arc-hook.sh`") && wrapper.contains(&format!("${{{v}"));
            if !config_reads.contains(v) && !by_wrapper {
                unread.push(v.clone());
            }
        }
    }
    assert!(
        unread.is_empty(),
        "README's Configuration table lists {unread:?}, which src/config.rs does not read"
    );
}
