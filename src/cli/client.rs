//! A small blocking HTTP client of the server's JSON API, and how its
//! failures become exit codes.

use std::time::Duration;

use serde_json::Value;

/// A failed client command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    pub fn unreachable(message: impl Into<String>) -> Self {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

/// What the server answered: status and JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Client {
    /// A client of the server at `server` (a base URL), sending `token`.
    pub fn new(server: &str, token: Option<String>) -> Result<Self, Failure> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| Failure::unreachable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            base: server.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// Sends `request` with the token, if any.
    fn start(&self, request: reqwest::blocking::RequestBuilder) -> Result<reqwest::blocking::Response, Failure> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        request
            .send()
            .map_err(|e| Failure::unreachable(format!("cannot reach {}: {}", self.base, error_chain(&e))))
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<Answer, Failure> {
        let response = self.start(request)?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .map_err(|e| Failure::unreachable(format!("reading the response failed: {e}")))?;
        // `204 No Content` has no body to parse.
        if text.is_empty() && status == 204 {
            return Ok(Answer {
                status,
                body: Value::Null,
            });
        }
        let body = serde_json::from_str(&text).map_err(|_| {
            Failure::unreachable(format!(
                "{} answered {status} with a body that is not JSON; is it a wasm-exec-api server?",
                self.base
            ))
        })?;
        Ok(Answer { status, body })
    }

    pub fn post(&self, path: &str, body: String) -> Result<Answer, Failure> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
    }

    pub fn get(&self, path: &str) -> Result<Answer, Failure> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn delete(&self, path: &str) -> Result<Answer, Failure> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
    }

    /// Follows the Server-Sent Events at `path`, calling `on_event` with
    /// each event's name and data, until the server ends the stream. An
    /// answer that is not a stream (an error) is returned instead.
    pub fn events(&self, path: &str, mut on_event: impl FnMut(&str, &str)) -> Result<Option<Answer>, Failure> {
        use std::io::BufRead;
        // A stream lasts as long as its job, which may outlast the client's
        // usual timeout.
        let request = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(86_400));
        let response = self.start(request)?;
        let status = response.status().as_u16();
        if status != 200 {
            let text = response.text().unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Ok(Some(Answer { status, body }));
        }
        let (mut name, mut data) = (String::new(), String::new());
        for line in std::io::BufReader::new(response).lines() {
            let line = line.map_err(|e| Failure::unreachable(format!("the event stream broke: {e}")))?;
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                on_event(&name, &data);
                (name, data) = (String::new(), String::new());
            }
        }
        Ok(None)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The server's error as one line: `code: first line of the message`.
pub fn server_error(answer: &Answer, code: u8) -> Failure {
    let error = &answer.body["error"];
    let kind = error["code"].as_str().unwrap_or("error");
    let message = error["message"].as_str().unwrap_or("(no message)");
    let first = message.lines().next().unwrap_or_default();
    let detail = match (error["trap"].as_str(), error["limit"].as_str()) {
        (Some(trap), _) => format!(" [{trap}]"),
        (_, Some(limit)) => format!(" [{limit}]"),
        _ => String::new(),
    };
    Failure {
        code,
        message: format!("{kind}{detail} ({}): {first}", answer.status),
    }
}
