//! Splitting a command line into a program and its arguments, without a shell.

/// Splits `command` into words as a POSIX shell would for a simple command, without running a
/// shell: blanks separate words; `'...'` keeps everything inside as it is; `"..."` keeps
/// everything but `\"`, `\\`, `\$` and `` \` ``, which lose their backslash; outside quotes a
/// backslash keeps the next character as it is. No variables, globs, pipes or redirections:
/// for those, run a shell yourself (`sh -c '...'`). An error for an unterminated quote or a
/// trailing backslash, or when there is no word at all.
///
/// ```
/// use presence_conformance::exec::split_words;
///
/// assert_eq!(split_words("python3 adapter.py --mutate cap").unwrap(), ["python3", "adapter.py", "--mutate", "cap"]);
/// assert_eq!(split_words(r#"sh -c 'exec my-adapter "$HOME"'"#).unwrap(), ["sh", "-c", r#"exec my-adapter "$HOME""#]);
/// assert_eq!(split_words(r#"a "b c" d\ e"#).unwrap(), ["a", "b c", "d e"]);
/// assert!(split_words("a 'b").is_err());
/// assert!(split_words("  ").is_err());
/// ```
pub fn split_words(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => words.extend(word.take()),
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err(format!("unterminated ' in {command:?}")),
                    }
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => current.push(c),
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err(format!("unterminated \" in {command:?}")),
                        },
                        Some(c) => current.push(c),
                        None => return Err(format!("unterminated \" in {command:?}")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("a trailing backslash in {command:?}")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    if words.is_empty() {
        return Err("the adapter's command is empty".into());
    }
    Ok(words)
}
