use super::*;

/// (what, request target, headers by name and value length, the refusal's status)
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, usize)>, Result<(), u16>);

fn head(target: &str, headers: &[(&str, usize)]) -> Result<(), u16> {
    let values: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, len)| (n.to_string(), vec![b'x'; *len]))
        .collect();
    check_request_head(
        target,
        values.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
    )
    .map_err(|p| p.status)
}

#[test]
fn a_request_head_is_refused_past_its_limits_with_the_status_that_names_the_part() {
    let long = format!("/v1/self/status?x={}", "a".repeat(MAX_URI_BYTES));
    let cases: Vec<Case<'_>> = vec![
        (
            "an ordinary request",
            "/v1/self/status",
            vec![("host", 3)],
            Ok(()),
        ),
        (
            "a target at the limit",
            &long[..MAX_URI_BYTES],
            vec![],
            Ok(()),
        ),
        ("a target past the limit", &long, vec![], Err(414)),
        (
            "headers at the limit",
            "/",
            vec![("x-a", MAX_HEADER_BYTES - 7)],
            Ok(()),
        ),
        (
            "headers past the limit",
            "/",
            vec![("x-a", MAX_HEADER_BYTES - 6)],
            Err(431),
        ),
        (
            "many small headers adding up",
            "/",
            vec![("x-b", 1000); 20],
            Err(431),
        ),
        (
            "a repeated parameter",
            "/v1/self/config?manager=a&manager=b",
            vec![],
            Err(400),
        ),
    ];
    for (what, target, headers, want) in cases {
        assert_eq!(head(target, &headers), want, "{what}");
    }
}
