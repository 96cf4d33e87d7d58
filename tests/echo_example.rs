//! Contract tests of `examples/echo_service.rs`, the project's own Tutorial 1
//! echo service, over raw TCP.
//!
//! A plain `cargo test` builds every example next to the binary under test
//! (`target/<triple>/<profile>/examples/`), and common::http builds it when
//! it is not there. Each test starts its own server on an ephemeral port
//! (`SERVER_PORT=0`) and learns the port from the startup line
//! `echo_service listening on <addr>`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use common::http::EchoService;

use miniserde::json::{self, Array, Number, Object, Value};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A raw HTTP/1.1 client on a new connection to `server`.
fn connect(server: &EchoService) -> Client {
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    Client {
        writer: stream.try_clone().unwrap(),
        reader: BufReader::new(stream),
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    fn json(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/json"));
        json::from_str(self.text()).expect("JSON body")
    }
}

/// A raw HTTP/1.1 client on one connection.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn send(&mut self, raw: &[u8]) {
        self.writer.write_all(raw).expect("send");
    }

    fn post(&mut self, path: &str, body: &str) -> Reply {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: echo\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(request.as_bytes());
        self.read_reply()
    }

    fn get(&mut self, path: &str) -> Reply {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: echo\r\n\r\n").as_bytes());
        self.read_reply()
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a line");
        assert!(line.ends_with("\r\n"), "line {line:?} ends with CRLF");
        line.truncate(line.len() - 2);
        line
    }

    fn read_reply(&mut self) -> Reply {
        let status_line = self.read_line();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(
            parts.next(),
            Some("HTTP/1.1"),
            "status line {status_line:?}"
        );
        let status = parts.next().and_then(|s| s.parse().ok()).expect("status");
        let mut headers = Vec::new();
        loop {
            let line = self.read_line();
            if line.is_empty() {
                break;
            }
            let (key, value) = line.split_once(':').expect("header field");
            headers.push((key.to_owned(), value.trim().to_owned()));
        }
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        let length: usize = reply
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .expect("numeric Content-Length");
        reply.body = vec![0; length];
        self.reader.read_exact(&mut reply.body).expect("body");
        reply
    }

    /// True when the server has closed the connection (end of stream).
    fn at_eof(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

fn string(value: &str) -> Value {
    Value::String(value.to_owned())
}

fn array(values: Vec<Value>) -> Value {
    let mut array = Array::new();
    array.extend(values);
    Value::Array(array)
}

fn index(i: u64) -> Value {
    Value::Number(Number::U64(i))
}

/// `{"data": rows}` as a JSON request body.
fn request_body(rows: Vec<Value>) -> String {
    let mut object = Object::new();
    object.insert("data".to_owned(), array(rows));
    json::to_string(&Value::Object(object))
}

/// The rows of a reply's `data`, each as (index JSON, reply string).
fn reply_rows(reply: &Reply) -> Vec<(String, String)> {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let Value::Object(object) = reply.json() else {
        panic!("reply is not an object: {}", reply.text());
    };
    assert_eq!(object.len(), 1, "only data in {}", reply.text());
    let Some(Value::Array(rows)) = object.get("data") else {
        panic!("no data array in {}", reply.text());
    };
    rows.iter()
        .map(|row| match row {
            Value::Array(row) if row.len() == 2 => match &row[1] {
                Value::String(said) => (json::to_string(&row[0]), said.clone()),
                other => panic!("non-string reply {}", json::to_string(other)),
            },
            other => panic!("bad row {}", json::to_string(other)),
        })
        .collect()
}

#[test]
fn healthcheck_answers_ready() {
    let server = EchoService::start(0, None);
    let mut client = connect(&server);
    let reply = client.get("/healthcheck");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "I'm ready!");
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
}

#[test]
fn echo_uses_character_name_and_defaults_to_i() {
    let bob = EchoService::start(0, Some("Bob"));
    let reply = connect(&bob).post("/echo", r#"{"data": [[0, "Hello"]]}"#);
    assert_eq!(reply.text(), r#"{"data":[[0,"Bob said Hello"]]}"#);
    assert_eq!(reply.header("content-type"), Some("application/json"));

    let default = EchoService::start(0, None);
    let reply = connect(&default).post("/echo", r#"{"data":[[0,"Hello"]]}"#);
    assert_eq!(reply.text(), r#"{"data":[[0,"I said Hello"]]}"#);
}

#[test]
fn strings_round_trip_exactly() {
    let server = EchoService::start(0, Some("Bob \"the\" \\ builder é"));
    let mut client = connect(&server);
    let texts = [
        "quote \" backslash \\ slash /",
        "newline \n return \r tab \t backspace \u{8} formfeed \u{c}",
        "controls \u{0} \u{1} \u{1f} del \u{7f}",
        "non-ASCII é ü 日本語 😀 \u{2028}\u{2029}",
        "",
        "   ",
        "\\u0041 is not an escape here",
    ];
    let rows = texts
        .iter()
        .enumerate()
        .map(|(i, text)| array(vec![index(i as u64), string(text)]))
        .collect();
    let reply = client.post("/echo", &request_body(rows));
    let got = reply_rows(&reply);
    let want: Vec<(String, String)> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            (
                i.to_string(),
                format!("Bob \"the\" \\ builder é said {text}"),
            )
        })
        .collect();
    assert_eq!(got, want);
    // Non-ASCII goes out as UTF-8, control characters as escapes.
    assert!(reply.text().contains("日本語 😀"));
    assert!(reply.text().contains(r"\u0000 \u0001 \u001f"));

    // Escaped input decodes, surrogate pairs included.
    let reply = client.post("/echo", r#"{"data":[[0,"\u00e9\ud83d\ude00\n\"\/"]]}"#);
    assert_eq!(
        reply_rows(&reply)[0].1,
        "Bob \"the\" \\ builder é said é😀\n\"/"
    );
}

#[test]
fn non_string_values_are_compact_json() {
    let server = EchoService::start(0, Some("Bob"));
    let mut client = connect(&server);
    let body = r#"{"data": [
        [0, { "a" : [1, 2.5, null, true, "x\"y"] }],
        [1, 42], [2, -7], [3, null], [4, false], [5, []], [6, {}]
    ]}"#;
    let got = reply_rows(&client.post("/echo", body));
    let said: Vec<&str> = got.iter().map(|(_, said)| said.as_str()).collect();
    assert_eq!(
        said,
        [
            r#"Bob said {"a":[1,2.5,null,true,"x\"y"]}"#,
            "Bob said 42",
            "Bob said -7",
            "Bob said null",
            "Bob said false",
            "Bob said []",
            "Bob said {}",
        ]
    );
}

#[test]
fn indices_come_back_as_sent_and_extra_elements_are_ignored() {
    let server = EchoService::start(0, Some("Bob"));
    let mut client = connect(&server);
    let body = r#"{"data":[[7,"a"],[-1,"b"],["k","c"],[null,"d"],[3,"e","extra",1]]}"#;
    let got = reply_rows(&client.post("/echo", body));
    let indices: Vec<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(indices, ["7", "-1", "\"k\"", "null", "3"]);
    assert_eq!(got[4].1, "Bob said e");
}

#[test]
fn empty_or_missing_data_gets_empty_object() {
    let server = EchoService::start(0, Some("Bob"));
    let mut client = connect(&server);
    for body in [
        r#"{"data": []}"#,
        "{}",
        r#"{"data": null}"#,
        r#"{"other": 1}"#,
    ] {
        let reply = client.post("/echo", body);
        assert_eq!(reply.status, 200, "{body}");
        assert_eq!(reply.text(), "{}", "{body}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
}

#[test]
fn many_rows_keep_their_order() {
    let server = EchoService::start(0, Some("Bob"));
    let mut client = connect(&server);
    let rows = (0..2000)
        .map(|i| array(vec![index(i), string(&format!("row {i}"))]))
        .collect();
    let got = reply_rows(&client.post("/echo", &request_body(rows)));
    assert_eq!(got.len(), 2000);
    for (i, (index, said)) in got.iter().enumerate() {
        assert_eq!(index, &i.to_string());
        assert_eq!(said, &format!("Bob said row {i}"));
    }
}

#[test]
fn bad_bodies_get_400_and_the_connection_stays_usable() {
    let server = EchoService::start(0, Some("Bob"));
    let mut client = connect(&server);
    for body in [
        "",
        "{",
        r#"{"data":[[0,"a"]],}"#,
        "[1]",
        "null",
        r#"{"data": 5}"#,
        r#"{"data": "x"}"#,
        r#"{"data": [1]}"#,
        r#"{"data": [[1]]}"#,
        r#"{"data": [[0, NaN]]}"#,
    ] {
        let reply = client.post("/echo", body);
        assert_eq!(reply.status, 400, "{body:?}");
        assert!(!reply.body.is_empty() && reply.body.len() < 100, "{body:?}");
    }
    // Invalid UTF-8.
    client.send(b"POST /echo HTTP/1.1\r\nHost: e\r\nContent-Length: 2\r\n\r\n\xff\xfe");
    assert_eq!(client.read_reply().status, 400);

    let reply = client.post("/echo", r#"{"data":[[0,"still here"]]}"#);
    assert_eq!(reply_rows(&reply)[0].1, "Bob said still here");
}

#[test]
fn unknown_paths_404_and_wrong_methods_405() {
    let server = EchoService::start(0, None);
    let mut client = connect(&server);
    assert_eq!(client.get("/").status, 404);
    assert_eq!(client.get("/echo/x").status, 404);
    assert_eq!(client.post("/nope", "{}").status, 404);
    let reply = client.get("/echo");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_eq!(client.post("/healthcheck", "{}").status, 405);
    // A query string does not change the route.
    assert_eq!(client.get("/healthcheck?probe=1").text(), "I'm ready!");
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = EchoService::start(0, Some("Bob"));
    let mut client = connect(&server);
    for i in 0..200 {
        let reply = client.post("/echo", &format!(r#"{{"data":[[{i},"n{i}"]]}}"#));
        assert_eq!(reply.header("connection"), Some("keep-alive"));
        assert_eq!(
            reply_rows(&reply),
            [(i.to_string(), format!("Bob said n{i}"))]
        );
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = EchoService::start(0, Some("Bob"));
    let mut client = connect(&server);
    let mut burst = Vec::new();
    for i in 0..20 {
        let body = format!(r#"{{"data":[[{i},"p{i}"]]}}"#);
        write!(
            burst,
            "POST /echo HTTP/1.1\r\nHost: e\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    }
    burst.extend_from_slice(b"GET /healthcheck HTTP/1.1\r\nHost: e\r\n\r\n");
    client.send(&burst);
    for i in 0..20 {
        let reply = client.read_reply();
        assert_eq!(
            reply_rows(&reply),
            [(i.to_string(), format!("Bob said p{i}"))]
        );
    }
    assert_eq!(client.read_reply().text(), "I'm ready!");
}

#[test]
fn chunked_request_bodies_are_accepted() {
    let server = EchoService::start(0, Some("Bob"));
    let mut client = connect(&server);
    client.send(
        b"POST /echo HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n\
          7\r\n{\"data\"\r\n\
          A;ext=1\r\n:[[0,\"chun\r\n\
          6\r\nked\"]]\r\n\
          1\r\n}\r\n\
          0\r\nX-Trailer: yes\r\n\r\n",
    );
    assert_eq!(reply_rows(&client.read_reply())[0].1, "Bob said chunked");
    // The connection goes on after a chunked body.
    assert_eq!(client.get("/healthcheck").text(), "I'm ready!");
}

#[test]
fn expect_100_continue_is_honoured() {
    let server = EchoService::start(0, Some("Bob"));
    let mut client = connect(&server);
    let body = r#"{"data":[[0,"after continue"]]}"#;
    client.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: e\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(client.read_line(), "HTTP/1.1 100 Continue");
    assert_eq!(client.read_line(), "");
    client.send(body.as_bytes());
    assert_eq!(
        reply_rows(&client.read_reply())[0].1,
        "Bob said after continue"
    );
}

#[test]
fn connection_close_and_http_1_0_end_the_connection() {
    let server = EchoService::start(0, None);

    let mut client = connect(&server);
    client.send(b"GET /healthcheck HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n");
    let reply = client.read_reply();
    assert_eq!(reply.text(), "I'm ready!");
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(client.at_eof());

    let mut client = connect(&server);
    client.send(b"GET /healthcheck HTTP/1.0\r\n\r\n");
    assert_eq!(client.read_reply().text(), "I'm ready!");
    assert!(client.at_eof());

    let mut client = connect(&server);
    client.send(b"GET /healthcheck HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(client.read_reply().header("connection"), Some("keep-alive"));
    client.send(b"GET /healthcheck HTTP/1.0\r\n\r\n");
    assert_eq!(client.read_reply().text(), "I'm ready!");
    assert!(client.at_eof());
}

#[test]
fn malformed_requests_get_400_then_close() {
    let server = EchoService::start(0, None);
    for raw in [
        &b"NONSENSE\r\n\r\n"[..],
        b"GET /healthcheck HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let mut client = connect(&server);
        client.send(raw);
        let reply = client.read_reply();
        assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(raw));
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(client.at_eof());
    }
    // A connection that closes mid-request does not disturb the server.
    let mut client = connect(&server);
    client.send(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"da");
    client.writer.shutdown(Shutdown::Write).unwrap();
    assert!(client.at_eof());
    assert_eq!(connect(&server).get("/healthcheck").text(), "I'm ready!");
}

#[test]
fn concurrent_connections_are_served() {
    let server = EchoService::start(0, Some("Bob"));
    let addr = server.addr;
    // Hold one idle connection open: others must not wait for it.
    let _idle = connect(&server);
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            thread::spawn(move || {
                let stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut client = Client {
                    writer: stream.try_clone().unwrap(),
                    reader: BufReader::new(stream),
                };
                for i in 0..25 {
                    let body = format!(r#"{{"data":[[{i},"w{worker}"]]}}"#);
                    let reply = client.post("/echo", &body);
                    assert_eq!(reply_rows(&reply)[0].1, format!("Bob said w{worker}"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}
