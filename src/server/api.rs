//! The OpenAI-compatible request and response shapes, and errors in OpenAI's JSON form.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::engine::{Compression, Event, Finish};

/// An error as OpenAI returns it: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            503 => "unavailable_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message, "type": self.kind(), "param": null,
            "code": self.status.as_u16(),
        }});
        (self.status, Json(body)).into_response()
    }
}

/// One string or a list of strings (`stop`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `prompt` of a completion: text, one text in a list, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

/// The extension field: how this request's KV cache is compressed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvCompression {
    pub method: Option<String>,
    pub budget: Option<usize>,
}

/// Fields shared by both completion endpoints.
#[derive(Debug, Deserialize)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    /// The chat endpoint's newer name for `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<OneOrMany>,
    #[serde(default)]
    pub stream: bool,
    /// Generate through end-of-generation tokens up to `max_tokens` (llama-server and vLLM's
    /// extension; load tests use it for fixed answer lengths).
    #[serde(default)]
    pub ignore_eos: bool,
    pub n: Option<usize>,
    pub kv_compression: Option<KvCompression>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Passed to the chat template as given (`content` may be a string or a list of parts).
    pub messages: Value,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub content: String,
    /// Add BOS (default true); with `false`, special-token text becomes those tokens.
    #[serde(default = "yes")]
    pub add_special: bool,
}

fn yes() -> bool {
    true
}

/// Parses a request body, with OpenAI's 400 for malformed JSON or missing fields.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Which endpoint a response is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Completion,
    Chat,
}

/// What a finished request produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub text: String,
    pub finish: Option<Finish>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub kv_cache_bytes: usize,
    pub kv_cache_bytes_full: usize,
}

impl Outcome {
    /// Folds one event in; an error ends the request.
    pub fn absorb(&mut self, e: Event) -> Result<(), ApiError> {
        match e {
            Event::Delta(t) => self.text.push_str(&t),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
                kv_cache_bytes,
                kv_cache_bytes_full,
            } => {
                self.finish = Some(finish);
                self.prompt_tokens = prompt_tokens;
                self.completion_tokens = completion_tokens;
                self.kv_cache_bytes = kv_cache_bytes;
                self.kv_cache_bytes_full = kv_cache_bytes_full;
            }
            Event::Error { status, message } => return Err(ApiError::new(status, message)),
        }
        Ok(())
    }

    pub fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    pub fn kv(&self, c: &Compression) -> Value {
        json!({
            "method": c.method, "budget": c.budget,
            "kv_cache_bytes": self.kv_cache_bytes,
            "kv_cache_bytes_full": self.kv_cache_bytes_full,
        })
    }
}

/// The response identity every chunk repeats.
pub struct Head<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    pub kind: Kind,
}

impl Head<'_> {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }

    /// The whole (non-streamed) response.
    pub fn full(&self, o: &Outcome, c: &Compression) -> Value {
        let choice = match self.kind {
            Kind::Completion => json!({"index": 0, "text": o.text, "logprobs": null,
                "finish_reason": o.finish}),
            Kind::Chat => json!({"index": 0, "logprobs": null, "finish_reason": o.finish,
                "message": {"role": "assistant", "content": o.text}}),
        };
        json!({
            "id": self.id, "object": self.object(false), "created": self.created,
            "model": self.model, "choices": [choice], "usage": o.usage(),
            "kv_compression": o.kv(c),
        })
    }

    /// One streamed chunk: `text` as the delta, `finish` on the last one.
    pub fn chunk(&self, text: Option<&str>, finish: Option<Finish>, first: bool) -> Value {
        let choice = match self.kind {
            Kind::Completion => json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null,
                "finish_reason": finish}),
            Kind::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = "assistant".into();
                }
                if let Some(t) = text {
                    delta["content"] = t.into();
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [choice],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_are_400() {
        let r: CompletionRequest = parse(
            br#"{"prompt": "hi", "max_tokens": 3, "stop": "x",
                "kv_compression": {"method": "snapkv", "budget": 64}}"#,
        )
        .unwrap();
        assert!(matches!(r.prompt, Prompt::Text(ref t) if t == "hi"));
        assert_eq!(r.common.stop.unwrap().into_vec(), vec!["x"]);
        assert_eq!(r.common.kv_compression.unwrap().budget, Some(64));
        let e = parse::<ChatRequest>(b"{\"max_tokens\": 3}").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("messages"), "{}", e.message);
        assert!(parse::<ChatRequest>(b"{not json").is_err());
        let e = parse::<CompletionRequest>(br#"{"prompt": "a", "kv_compression": {"budgt": 1}}"#)
            .unwrap_err();
        assert!(e.message.contains("budgt"), "{}", e.message);
    }

    #[test]
    fn chunks_carry_role_first_and_finish_last() {
        let h = Head {
            id: "x",
            created: 1,
            model: "m",
            kind: Kind::Chat,
        };
        let first = h.chunk(Some("a"), None, true);
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["object"], "chat.completion.chunk");
        let last = h.chunk(None, Some(Finish::Length), false);
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        assert!(last["choices"][0]["delta"].get("content").is_none());
    }
}
