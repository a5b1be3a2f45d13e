//! Errors of the text layer: every variant names the file, token, slot or value at fault.

use std::path::PathBuf;

/// An error of tokenizer loading, chat-template rendering, tokenization or prompt building.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be parsed.
    #[error("{file}: invalid JSON: {source}")]
    Json {
        /// The file.
        file: String,
        /// The parser error.
        #[source]
        source: serde_json::Error,
    },
    /// `tokenizer.json` was rejected by the tokenizers library.
    #[error("{file}: not a valid tokenizers definition: {reason}")]
    TokenizerDefinition {
        /// The file.
        file: String,
        /// What the tokenizers library reported.
        reason: String,
    },
    /// A config field has an unexpected JSON type.
    #[error("{file}: field `{field}` must be {expected}, found {found}")]
    ConfigField {
        /// The file.
        file: String,
        /// The field name.
        field: String,
        /// The accepted shapes.
        expected: &'static str,
        /// The value found.
        found: String,
    },
    /// A special token named by a config file is not in the vocabulary.
    #[error("{file}: {field} {token:?} is not a token of tokenizer.json")]
    UnknownToken {
        /// The config file.
        file: String,
        /// The field naming the token (e.g. `eos_token`).
        field: String,
        /// The token string.
        token: String,
    },
    /// The tokenizer has no chat template.
    #[error(
        "{origin}: no chat template (expected chat_template.jinja or a `chat_template` string in tokenizer_config.json)"
    )]
    NoChatTemplate {
        /// Where the tokenizer files came from.
        origin: String,
    },
    /// The chat template failed to parse or to render (includes `raise_exception` messages).
    #[error("chat template {template}: {reason}")]
    Template {
        /// The template's origin (file).
        template: String,
        /// What went wrong.
        reason: String,
    },
    /// Text could not be tokenized.
    #[error("cannot tokenize text starting with {preview:?}: {reason}")]
    Encode {
        /// The first characters of the text.
        preview: String,
        /// What the tokenizers library reported.
        reason: String,
    },
    /// Ids could not be decoded.
    #[error("cannot decode {count} token ids (first {first:?}): {reason}")]
    Decode {
        /// How many ids were given.
        count: usize,
        /// The first id, if any.
        first: Option<u32>,
        /// What the tokenizers library reported.
        reason: String,
    },
    /// A slot placeholder is missing from the rendered prompt.
    #[error("slot {slot} not found in the rendered prompt at or after byte {from} (slots must appear in order)")]
    MissingSlot {
        /// The slot string.
        slot: String,
        /// The byte offset where the search started.
        from: usize,
    },
    /// A name (style, role, dataset) is not known.
    #[error("unknown {what} {value:?}; expected one of: {expected}")]
    UnknownName {
        /// What kind of name (e.g. "dataset").
        what: &'static str,
        /// The name given.
        value: String,
        /// The accepted names.
        expected: String,
    },
    /// A role was asked of a style that does not have it.
    #[error("style {style} has no role {role}; its roles are: {expected}")]
    RoleNotInStyle {
        /// The style key.
        style: &'static str,
        /// The role key.
        role: &'static str,
        /// The style's roles.
        expected: String,
    },
    /// A dataset row lacks what its question is built from, or the dataset has no row builder.
    #[error("{dataset} row: {reason}")]
    DatasetRow {
        /// The dataset key.
        dataset: &'static str,
        /// What is missing or unsupported.
        reason: String,
    },
    /// Rounds are 1-based.
    #[error("round must be >= 1 (rounds are 1-based), got {0}")]
    InvalidRound(usize),
}

/// Result alias of this crate.
pub type Result<T, E = TextError> = std::result::Result<T, E>;
