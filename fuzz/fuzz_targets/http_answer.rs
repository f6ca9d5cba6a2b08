//! The http probe's judgement of an answer: status, headers, body text,
//! regexes and JSON pointers. The first line of the input is a JSON
//! pointer, the rest the body.
#![no_main]
use depwatch::net::client::Answer;
use depwatch::probe::http::expect::{Expect, StatusPat};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let (pointer, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let pointer = String::from_utf8_lossy(pointer).into_owned();
    let expect = Expect {
        status: vec![StatusPat::parse(&json!("2xx")).unwrap()],
        body_contains: vec!["ok".into()],
        body_regex: vec![],
        body_json: vec![(pointer.clone(), json!("up")), ("/a/0".into(), json!(1.0))],
        body_json_exists: vec![pointer],
        headers: vec![],
    };
    let answer = Answer {
        status: hyper::StatusCode::OK,
        headers: hyper::HeaderMap::new(),
        body: body.to_vec(),
    };
    let _ = expect.judge(&answer);
});
