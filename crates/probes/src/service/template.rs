//! Version-field substitution: `$1`…`$9`, `$P(n)`, `$SUBST(n,"from","to")`, `$I(n,">")`.

/// Expands one template against a match's capture groups (index 0 = whole match).
/// Unknown or malformed helpers are copied literally; a missing group expands to nothing.
pub fn expand(template: &str, groups: &[Option<&[u8]>]) -> String {
    let group = |n: usize| -> &[u8] { groups.get(n).copied().flatten().unwrap_or(&[]) };
    let b = template.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(template.len() + 16);
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let rest = &template[i + 1..];
        if let Some(d) = rest.bytes().next().filter(u8::is_ascii_digit) {
            out.extend_from_slice(group((d - b'0') as usize));
            i += 2;
            continue;
        }
        if let Some((args, used)) = call(rest, "P")
            && let Some(n) = args.first().and_then(|a| a.parse::<usize>().ok())
        {
            out.extend(
                group(n)
                    .iter()
                    .copied()
                    .filter(|c| (0x20..0x7f).contains(c)),
            );
            i += 1 + used;
            continue;
        }
        if let Some((args, used)) = call(rest, "SUBST")
            && let (Some(n), Some(from), Some(to)) = (
                args.first().and_then(|a| a.parse::<usize>().ok()),
                args.get(1).and_then(|a| unquote(a)),
                args.get(2).and_then(|a| unquote(a)),
            )
        {
            let g = String::from_utf8_lossy(group(n)).into_owned();
            let s = if from.is_empty() {
                g
            } else {
                g.replace(&from, &to)
            };
            out.extend_from_slice(s.as_bytes());
            i += 1 + used;
            continue;
        }
        if let Some((args, used)) = call(rest, "I")
            && let (Some(n), Some(endian)) = (
                args.first().and_then(|a| a.parse::<usize>().ok()),
                args.get(1).and_then(|a| unquote(a)),
            )
        {
            let g = group(n);
            if g.len() <= 8 && (endian == ">" || endian == "<") {
                let mut v: u64 = 0;
                let bytes: Vec<u8> = if endian == ">" {
                    g.to_vec()
                } else {
                    g.iter().rev().copied().collect()
                };
                for c in bytes {
                    v = (v << 8) | c as u64;
                }
                out.extend_from_slice(v.to_string().as_bytes());
                i += 1 + used;
                continue;
            }
        }
        out.push(b'$');
        i += 1;
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

/// Parses `NAME(arg,arg,...)` at the start of `s`; returns the args and the bytes consumed.
/// Commas inside double quotes do not split.
fn call<'a>(s: &'a str, name: &str) -> Option<(Vec<&'a str>, usize)> {
    let rest = s.strip_prefix(name)?.strip_prefix('(')?;
    let mut args = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            ',' if !in_quote => {
                args.push(rest[start..i].trim());
                start = i + 1;
            }
            ')' if !in_quote => {
                args.push(rest[start..i].trim());
                return Some((args, name.len() + 1 + i + 1));
            }
            _ => {}
        }
    }
    None
}

fn unquote(a: &str) -> Option<String> {
    let inner = a.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn helpers() {
        let g: Vec<Option<&[u8]>> = vec![
            Some(b"all"),
            Some(b"9.2p1"),
            Some(b"a\x01b"),
            Some(b"1_2_3"),
            Some(b"\x01\x00"),
        ];
        assert_eq!(expand("v$1 x", &g), "v9.2p1 x");
        assert_eq!(expand("$P(2)", &g), "ab");
        assert_eq!(expand("$SUBST(3,\"_\",\".\")", &g), "1.2.3");
        assert_eq!(expand("$I(4,\">\")/$I(4,\"<\")", &g), "256/1");
        assert_eq!(expand("$7 $", &g), "$");
        assert_eq!(expand("$SUBST(3,", &g), "$SUBST(3,");
    }
}
