//! The shell's words: a line splits into bare words and JSON strings (for ids with blanks or
//! control characters, and the empty string), and output values are bare when they can be.

/// The words of `line`: runs of non-blank characters, or JSON strings (`"in a meeting"`,
/// `""`, `"\u0007"`). A bare word may end in a JSON string (`custom="on a call"`).
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let (word, after) = word(rest)?;
        words.push(word);
        rest = after.trim_start();
    }
    Ok(words)
}

/// The first word of `text` (which starts with a non-blank) and what follows it.
fn word(text: &str) -> Result<(String, &str), String> {
    let mut word = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            break;
        }
        if c == '"' {
            let (string, after) = json_string(rest)?;
            word.push_str(&string);
            rest = after;
            continue;
        }
        word.push(c);
        rest = rest.get(c.len_utf8()..).unwrap_or_default();
    }
    Ok((word, rest))
}

/// The JSON string at the start of `text`, and what follows it.
fn json_string(text: &str) -> Result<(String, &str), String> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<String>();
    match stream.next() {
        Some(Ok(string)) => Ok((string, text.get(stream.byte_offset()..).unwrap_or_default())),
        _ => Err(format!("a bad quoted string: {}", text.split_whitespace().next().unwrap_or(text))),
    }
}

/// `key=value`, the value bare when it is not empty and has no blank, control character or
/// leading quote, else as a JSON string.
pub fn field(key: &str, value: &str) -> String {
    let bare = !value.is_empty()
        && !value.starts_with('"')
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if bare {
        format!("{key}={value}")
    } else {
        format!("{key}={}", serde_json::Value::String(value.to_string()))
    }
}

/// `text` with control characters escaped, so that it stays on one line.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_bare_or_quoted() {
        assert_eq!(words("at 5 login alice phone").unwrap(), ["at", "5", "login", "alice", "phone"]);
        assert_eq!(
            words(r#"at 5 set_status "" p "in a \"meeting\"""#).unwrap(),
            ["at", "5", "set_status", "", "p", "in a \"meeting\""]
        );
        assert_eq!(words(r#"x "\u0007" custom="a b" "#).unwrap(), ["x", "\u{7}", "custom=a b"]);
        assert!(words(r#"at 5 login "alice"#).is_err());
        assert_eq!(words("   ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn fields_are_bare_when_they_can_be() {
        assert_eq!(field("user", "alice"), "user=alice");
        assert_eq!(field("custom", ""), r#"custom="""#);
        assert_eq!(field("custom", "in a meeting"), r#"custom="in a meeting""#);
        assert_eq!(field("user", "e\u{7}"), r#"user="e\u0007""#);
        assert_eq!(field("user", "\"x"), r#"user="\"x""#);
        assert_eq!(field("user", "éé"), "user=éé");
        for value in ["", "a b", "\n", "\"", "é é", "x=y"] {
            let line = format!("k {}", field("v", value));
            assert_eq!(words(&line).unwrap(), ["k", &format!("v={value}")]);
        }
    }
}
