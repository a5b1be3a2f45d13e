//! A checkpoint's tokenizer: `tokenizer.json` + `tokenizer_config.json` + `chat_template.jinja`
//! + `generation_config.json`, with HF's encode/decode, chat rendering and slot splitting.

use std::path::Path;

use serde_json::Value as Json;

use crate::chat::{ChatMessage, ChatOptions, ChatTemplate, ROLES_MUST_ALTERNATE};
use crate::error::{Result, TextError};
use crate::pystr::py_strip;

/// File name of the tokenizers definition.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// File name of the HF tokenizer config.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// File name of the standalone chat template.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
/// File name of the generation config.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// Special-token fields of `tokenizer_config.json` exposed to chat templates.
const SPECIAL_TOKEN_FIELDS: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// The raw contents of a checkpoint's tokenizer files (for builds without a filesystem).
#[derive(Debug, Clone, Copy)]
pub struct TokenizerFiles<'a> {
    /// Where the files come from (a directory or repo id), used in error messages.
    pub origin: &'a str,
    /// `tokenizer.json` (required).
    pub tokenizer_json: &'a [u8],
    /// `tokenizer_config.json`, if present.
    pub tokenizer_config: Option<&'a [u8]>,
    /// `chat_template.jinja`, if present (takes precedence over the config's `chat_template`).
    pub chat_template: Option<&'a str>,
    /// `generation_config.json`, if present.
    pub generation_config: Option<&'a [u8]>,
}

/// A checkpoint's tokenizer with its special tokens, chat template and EOS ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special_tokens: Vec<(&'static str, String)>,
    eos_token_id: Option<u32>,
    pad_token_id: Option<u32>,
    generation_eos_ids: Vec<u32>,
    clean_up_tokenization_spaces: bool,
    chat_template: Option<ChatTemplate>,
    origin: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("origin", &self.origin)
            .field("vocab_size", &self.vocab_size())
            .field("special_tokens", &self.special_tokens)
            .field("eos_token_id", &self.eos_token_id)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads the tokenizer files of a checkpoint directory (only `tokenizer.json` is required).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_reader(&dir.display().to_string(), |name| {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(TextError::Io { path, source }),
            }
        })
    }

    /// Loads the tokenizer files of the checkpoint `origin` through `read(file name)` (`None`: absent).
    pub fn from_reader(origin: &str, read: impl Fn(&str) -> Result<Option<Vec<u8>>>) -> Result<Self> {
        let path = |name: &str| std::path::PathBuf::from(format!("{origin}/{name}"));
        let tokenizer_json = read(TOKENIZER_FILE)?.ok_or_else(|| TextError::Io {
            path: path(TOKENIZER_FILE),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the checkpoint has no tokenizer.json"),
        })?;
        let tokenizer_config = read(TOKENIZER_CONFIG_FILE)?;
        let generation_config = read(GENERATION_CONFIG_FILE)?;
        let chat_template = read(CHAT_TEMPLATE_FILE)?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|e| TextError::Io {
                    path: path(CHAT_TEMPLATE_FILE),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })
            })
            .transpose()?;
        Self::from_bytes(TokenizerFiles {
            origin,
            tokenizer_json: &tokenizer_json,
            tokenizer_config: tokenizer_config.as_deref(),
            chat_template: chat_template.as_deref(),
            generation_config: generation_config.as_deref(),
        })
    }

    /// Builds the tokenizer from file contents.
    pub fn from_bytes(files: TokenizerFiles<'_>) -> Result<Self> {
        let file = |name: &str| format!("{}/{name}", files.origin);
        let inner = tokenizers::Tokenizer::from_bytes(files.tokenizer_json)
            .map_err(|e| TextError::TokenizerDefinition { file: file(TOKENIZER_FILE), reason: e.to_string() })?;
        let config = parse_json(files.tokenizer_config, &file(TOKENIZER_CONFIG_FILE))?;
        let mut special_tokens = Vec::new();
        for field in SPECIAL_TOKEN_FIELDS {
            if let Some(text) = token_string(&config, field, &file(TOKENIZER_CONFIG_FILE))? {
                special_tokens.push((field, text));
            }
        }
        let mut tok = Self {
            inner,
            special_tokens,
            eos_token_id: None,
            pad_token_id: None,
            generation_eos_ids: Vec::new(),
            clean_up_tokenization_spaces: config
                .get("clean_up_tokenization_spaces")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            chat_template: chat_template(&files, &config)?,
            origin: files.origin.to_owned(),
        };
        tok.eos_token_id = tok.special_token_id("eos_token", &file(TOKENIZER_CONFIG_FILE))?;
        tok.pad_token_id = tok.special_token_id("pad_token", &file(TOKENIZER_CONFIG_FILE))?;
        let generation = parse_json(files.generation_config, &file(GENERATION_CONFIG_FILE))?;
        tok.generation_eos_ids = eos_ids(&generation, &file(GENERATION_CONFIG_FILE))?;
        if let Some(id) = tok.eos_token_id.filter(|id| !tok.generation_eos_ids.contains(id)) {
            tok.generation_eos_ids.push(id);
        }
        Ok(tok)
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (e.g. BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        if text.is_empty() && !add_special_tokens {
            return Ok(Vec::new());
        }
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| TextError::Encode { preview: text.chars().take(40).collect(), reason: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids` like HF's `decode` (incl. `clean_up_tokenization_spaces` when configured).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self.inner.decode(ids, skip_special_tokens).map_err(|e| TextError::Decode {
            count: ids.len(),
            first: ids.first().copied(),
            reason: e.to_string(),
        })?;
        Ok(if self.clean_up_tokenization_spaces { clean_up_tokenization(&text) } else { text })
    }

    /// Streaming display: the text of `ids` past the first `printed` bytes already shown, and the new
    /// count. Text ending in an incomplete UTF-8 sequence (U+FFFD) is held back until it completes.
    pub fn decode_new_text(&self, ids: &[u32], printed: usize) -> (String, usize) {
        match self.decode(ids, true) {
            Ok(text) if text.len() > printed && !text.ends_with('\u{FFFD}') && text.is_char_boundary(printed) => {
                (text[printed..].to_string(), text.len())
            }
            _ => (String::new(), printed),
        }
    }

    /// A generated answer as RecursiveMAS returns it: decoded without special tokens, stripped.
    pub fn decode_generated(&self, ids: &[u32]) -> Result<String> {
        Ok(py_strip(&self.decode(ids, true)?).to_owned())
    }

    /// Id of `tokenizer_config.json`'s `eos_token`: the only stop token RecursiveMAS uses.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }

    /// Id of `tokenizer_config.json`'s `pad_token`, if any.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
    }

    /// `generation_config.json`'s `eos_token_id`(s) followed by the tokenizer's EOS if not among them.
    pub fn generation_eos_ids(&self) -> &[u32] {
        &self.generation_eos_ids
    }

    /// Text of a special token field (`"bos_token"`, `"eos_token"`, ...) of the config, if set.
    pub fn special_token(&self, field: &str) -> Option<&str> {
        self.special_tokens.iter().find(|(name, _)| *name == field).map(|(_, text)| text.as_str())
    }

    /// Id of a token string (added tokens included).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of tokens including added tokens (HF's `len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The chat template, if the checkpoint has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Renders `messages` with the checkpoint's chat template.
    pub fn render_chat(&self, messages: &[ChatMessage], opts: &ChatOptions) -> Result<String> {
        let template =
            self.chat_template.as_ref().ok_or_else(|| TextError::NoChatTemplate { origin: self.origin.clone() })?;
        let special: Vec<(&str, &str)> =
            self.special_tokens.iter().map(|(name, text)| (*name, text.as_str())).collect();
        template.render(messages, opts, &special)
    }

    /// Renders `[system, user]`; if the template rejects a system role ("Conversation roles must
    /// alternate", BioMistral) renders one user message `system + "\n\n" + user` instead.
    pub fn render_prompt(&self, system: &str, user: &str, opts: &ChatOptions) -> Result<String> {
        let messages = [ChatMessage::new("system", system), ChatMessage::new("user", user)];
        match self.render_chat(&messages, opts) {
            Err(TextError::Template { reason, .. }) if reason.contains(ROLES_MUST_ALTERNATE) => {
                let merged = [ChatMessage::new("user", format!("{system}\n\n{user}"))];
                self.render_chat(&merged, opts)
            }
            other => other,
        }
    }

    /// Cuts `rendered` at `slots` (in order) and tokenizes each of the k+1 pieces on its own
    /// without special tokens; an empty piece gives an empty list.
    pub fn encode_segments(&self, rendered: &str, slots: &[&str]) -> Result<Vec<Vec<u32>>> {
        split_at_slots(rendered, slots)?.into_iter().map(|piece| self.encode(piece, false)).collect()
    }

    fn special_token_id(&self, field: &str, file: &str) -> Result<Option<u32>> {
        let Some(text) = self.special_token(field) else {
            return Ok(None);
        };
        self.token_to_id(text).map(Some).ok_or_else(|| TextError::UnknownToken {
            file: file.to_owned(),
            field: field.to_owned(),
            token: text.to_owned(),
        })
    }
}

/// Splits `text` into k+1 pieces around `slots`, each searched left to right after the previous.
pub fn split_at_slots<'t>(text: &'t str, slots: &[&str]) -> Result<Vec<&'t str>> {
    let mut pieces = Vec::with_capacity(slots.len() + 1);
    let mut start = 0;
    for slot in slots {
        let at = text[start..]
            .find(slot)
            .map(|offset| start + offset)
            .ok_or_else(|| TextError::MissingSlot { slot: (*slot).to_owned(), from: start })?;
        pieces.push(&text[start..at]);
        start = at + slot.len();
    }
    pieces.push(&text[start..]);
    Ok(pieces)
}

/// HF's `clean_up_tokenization`: removes spaces before punctuation and English contractions.
fn clean_up_tokenization(text: &str) -> String {
    const RULES: [(&str, &str); 10] = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    RULES.iter().fold(text.to_owned(), |acc, (from, to)| acc.replace(from, to))
}

fn parse_json(bytes: Option<&[u8]>, file: &str) -> Result<Json> {
    match bytes {
        None => Ok(Json::Null),
        Some(bytes) => {
            serde_json::from_slice(bytes).map_err(|source| TextError::Json { file: file.to_owned(), source })
        }
    }
}

fn config_field_error(file: &str, field: &str, expected: &'static str, found: &Json) -> TextError {
    TextError::ConfigField { file: file.to_owned(), field: field.to_owned(), expected, found: found.to_string() }
}

/// A special-token field: a string, an `{"content": ...}` object, null or absent.
fn token_string(config: &Json, field: &str, file: &str) -> Result<Option<String>> {
    match config.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(text)) => Ok(Some(text.clone())),
        Some(obj @ Json::Object(map)) => match map.get("content") {
            Some(Json::String(text)) => Ok(Some(text.clone())),
            _ => Err(config_field_error(file, field, "a string or {\"content\": string}", obj)),
        },
        Some(other) => Err(config_field_error(file, field, "a string or {\"content\": string}", other)),
    }
}

/// The chat template: `chat_template.jinja`, else the config's `chat_template` (a string, or a
/// list of `{"name", "template"}` from which `default` is used).
fn chat_template(files: &TokenizerFiles<'_>, config: &Json) -> Result<Option<ChatTemplate>> {
    if let Some(source) = files.chat_template {
        return Ok(Some(ChatTemplate::new(source, format!("{}/{CHAT_TEMPLATE_FILE}", files.origin))));
    }
    let origin = format!("{}/{TOKENIZER_CONFIG_FILE}:chat_template", files.origin);
    let source = match config.get("chat_template") {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::String(source)) => source,
        Some(list @ Json::Array(entries)) => entries
            .iter()
            .find(|e| e.get("name").and_then(Json::as_str) == Some("default"))
            .and_then(|e| e.get("template"))
            .and_then(Json::as_str)
            .ok_or_else(|| {
                config_field_error(&origin, "chat_template", "a string or a list with a \"default\" entry", list)
            })?,
        Some(other) => {
            return Err(config_field_error(&origin, "chat_template", "a string", other));
        }
    };
    Ok(Some(ChatTemplate::new(source, origin)))
}

/// `eos_token_id` of a generation config: an int, a list of ints, null or absent.
fn eos_ids(generation: &Json, file: &str) -> Result<Vec<u32>> {
    let as_id = |v: &Json| v.as_u64().and_then(|id| u32::try_from(id).ok());
    let expected = "a token id or a list of token ids";
    match generation.get("eos_token_id") {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .map(|v| as_id(v).ok_or_else(|| config_field_error(file, "eos_token_id", expected, v)))
            .collect(),
        Some(v) => as_id(v).map(|id| vec![id]).ok_or_else(|| config_field_error(file, "eos_token_id", expected, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_slots_keeps_empty_pieces() {
        assert_eq!(split_at_slots("<A><B>x", &["<A>", "<B>"]).unwrap(), vec!["", "", "x"]);
        assert_eq!(split_at_slots("a<A>b<A>c", &["<A>", "<A>"]).unwrap(), vec!["a", "b", "c"]);
        assert_eq!(split_at_slots("abc", &[]).unwrap(), vec!["abc"]);
    }

    #[test]
    fn split_at_slots_requires_order() {
        let err = split_at_slots("<B><A>", &["<A>", "<B>"]).unwrap_err();
        assert!(matches!(err, TextError::MissingSlot { ref slot, from: 6 } if slot == "<B>"), "{err}");
    }

    #[test]
    fn cleans_up_like_hf() {
        assert_eq!(clean_up_tokenization("a , b . I 'm c n't"), "a, b. I'm cn't");
    }
}
