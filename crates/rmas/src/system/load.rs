//! Loading a resolved [`SystemSpec`] from local files into a [`LoadedSystem`] (native builds; the
//! browser loads from downloaded bytes in `downloads.rs`).

use rmas_models::{Model, Precision, RmasBackend};
use rmas_text::{Role, Tokenizer};

use super::{AgentSpec, Checkpoint, SystemSpec};
use crate::engine::{Agent, AgentLoader, LoadedSystem};
use crate::error::{Result, RmasError};
use crate::link::{InnerLink, OuterLink};

impl AgentSpec {
    /// Loads this agent's checkpoint (at `precision`), tokenizer and inner link.
    pub fn load<B: RmasBackend>(&self, device: &B::Device, precision: impl Into<Precision>) -> Result<Agent<B>> {
        let (model, tokenizer) = match &self.checkpoint {
            Checkpoint::Dir(dir) => (Model::load(dir, device, precision)?, Tokenizer::from_dir(dir)?),
            Checkpoint::Gguf(path) => load_gguf(path, device, precision)?,
        };
        let inner = InnerLink::load(&self.inner_link, device)?;
        Agent::new(self.role, model, tokenizer, inner, &self.inner_link)
    }
}

/// A GGUF checkpoint (docs/gguf.md): the model at `precision` (blocks kept or dequantized) and the
/// tokenizer and chat template its metadata holds.
pub fn load_gguf<B: RmasBackend>(
    path: &std::path::Path,
    device: &B::Device,
    precision: impl Into<Precision>,
) -> Result<(Model<B>, Tokenizer)> {
    let (model, gguf) = Model::load_gguf(path, device, precision)?;
    Ok((model, gguf_tokenizer(&gguf)?))
}

/// The tokenizer and chat template a GGUF file's metadata holds (`tokenizer.ggml.*`,
/// `tokenizer.chat_template`; docs/gguf.md).
pub fn gguf_tokenizer(gguf: &rmas_models::gguf::GgufFile) -> Result<Tokenizer> {
    let (tokenizer_json, tokenizer_config) = gguf.tokenizer_files()?;
    Ok(Tokenizer::from_bytes(rmas_text::tokenizer::TokenizerFiles {
        origin: &gguf.path.display().to_string(),
        tokenizer_json: tokenizer_json.as_bytes(),
        tokenizer_config: Some(tokenizer_config.as_bytes()),
        chat_template: None,
        generation_config: None,
    })?)
}

impl SystemSpec {
    /// Loads every outer link and, unless `offload`, every agent; offloaded agents are loaded
    /// for each stage they run and dropped after it.
    pub fn load<B: RmasBackend>(
        &self,
        device: &B::Device,
        precision: impl Into<Precision>,
        offload: bool,
    ) -> Result<LoadedSystem<B>> {
        let precision = precision.into();
        let hidden = self.hidden_sizes()?;
        let outer = self.load_outer_links(&hidden, |path| OuterLink::load(path, device))?;
        if offload {
            let loader = SpecLoader { spec: self.clone(), device: device.clone(), precision };
            return Ok(LoadedSystem::offloaded(self.style, Box::new(loader), outer));
        }
        let agents = self.agents.iter().map(|a| a.load(device, precision.clone())).collect::<Result<Vec<_>>>()?;
        Ok(LoadedSystem::new(self.style, agents, outer))
    }
}

/// Loads the agents of a spec from their local files.
struct SpecLoader<B: RmasBackend> {
    spec: SystemSpec,
    device: B::Device,
    precision: Precision,
}

impl<B: RmasBackend> AgentLoader<B> for SpecLoader<B> {
    fn load(&self, role: Role) -> Result<Agent<B>> {
        let agent = self.spec.agent(role).ok_or_else(|| RmasError::InvalidSystem {
            system: self.spec.name.clone(),
            msg: format!("no agent for role `{role}`"),
        })?;
        agent.load(&self.device, self.precision.clone())
    }
}
