//! The RecursiveMAS prompt texts, byte for byte (docs/algorithm.md, "Prompt templates"): each
//! style's user prompts per role and round, the system prompts and the slot placeholders.

use std::sync::LazyLock;

use regex::Regex;

use crate::pystr::py_rstrip;
use crate::vocab::{CodeTask, Dataset, MasTask, Role, Task};

/// System prompt of every style but deliberation.
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant.";
/// System prompt of both deliberation agents.
pub const DELIBERATION_SYSTEM_PROMPT: &str = "You are a helpful assistant that can solve the given question step by step with the help of the wikipedia search tool and python interpreter tool. Given a question, you need to first think about the reasoning process in the mind and then provide the answer. During thinking, you can invoke the wikipedia search tool to search and python interpreter tool to calculate the math problem for fact information about specific topics if needed. The search query and result are enclosed within <search> </search> and <result> </result> tags respectively. For example, <search> search query here </search> <result> search result here </result>, <python> python code here </python> <result> python interpreter result here </result>. In the last part of the answer, the final exact answer is enclosed within \\boxed{} with latex format.";

/// Sequential critic slot: the planner's message.
pub const PLANNER_SLOT: &str = "<<LATENT_PLANNER_SLOT>>";
/// Sequential solver slot: the critic's message.
pub const REFINED_SLOT: &str = "<<LATENT_REFINED_SLOT>>";
/// Sequential planner slot (round >= 2): the solver's feedback.
pub const FEEDBACK_SLOT: &str = "<<LATENT_FEEDBACK_SLOT>>";
/// Mixture summarizer slot: the math expert's message.
pub const HIE_MATH_EXPERT_SLOT: &str = "<<HIE_MATH_EXPERT_SLOT>>";
/// Mixture summarizer slot: the code expert's message.
pub const HIE_CODE_EXPERT_SLOT: &str = "<<HIE_CODE_EXPERT_SLOT>>";
/// Mixture summarizer slot: the science expert's message.
pub const HIE_SCIENCE_EXPERT_SLOT: &str = "<<HIE_SCIENCE_EXPERT_SLOT>>";
/// Mixture expert slot (round >= 2): the summarizer's feedback.
pub const HIE_FEEDBACK_SLOT: &str = "<<HIE_FEEDBACK_SLOT>>";
/// Distillation learner slot: the expert's message.
pub const DISTILL_EXPERT_SLOT: &str = "<<DISTILL_EXPERT_SLOT>>";
/// Distillation expert slot (round >= 2): the learner's feedback.
pub const DISTILL_FEEDBACK_SLOT: &str = "<<DISTILL_FEEDBACK_SLOT>>";
/// Deliberation toolcaller slot: the reflector's message.
pub const DELIBERATION_REFLECTOR_SLOT: &str = "<<DELIBERATION_REFLECTOR_SLOT>>";
/// Deliberation reflector slot (round >= 2): the toolcaller's feedback.
pub const DELIBERATION_FEEDBACK_SLOT: &str = "<<DELIBERATION_FEEDBACK_SLOT>>";

const STEP_FORMAT: &str = "Step 1: ...\n...\nStep n: ...";
const FINAL_CODE: &str = "Solve the problem and put the final code inside one markdown code block, for example ```python\\n<your solution code>\\n```.";
const FINAL_CHOICE: &str = "Solve the question and put the final choice inside \\boxed{}, for example \\boxed{A}.";
const FINAL_MATH: &str = "Solve the question and put the final answer inside \\boxed{}, for example \\boxed{1}.";
const CHOICE_SUFFIX: &str = "Choose the correct option (A/B/C/D).";

/// What a prompt is about: the question and the dataset facts the templates depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptContext<'a> {
    /// The question text as given to the prompts (docs/algorithm.md, "Datasets and question text").
    pub question: &'a str,
    /// The dataset.
    pub dataset: Dataset,
    /// The code interface (code datasets only).
    pub code_task: CodeTask,
    /// The function to implement (code datasets with a function interface).
    pub fn_name: Option<&'a str>,
}

impl<'a> PromptContext<'a> {
    /// A context with the dataset's default code interface and no function name.
    pub fn new(question: &'a str, dataset: Dataset) -> Self {
        Self { question, dataset, code_task: dataset.default_code_task(), fn_name: None }
    }

    /// The same context with a function name: a function task, as the reference's `task_type` is
    /// for every row that names one (MBPP+, LiveCodeBench's functional problems).
    pub fn with_fn_name(self, fn_name: &'a str) -> Self {
        Self { fn_name: Some(fn_name), code_task: CodeTask::Function, ..self }
    }
}

/// A user prompt and the slot placeholders it contains, in order of appearance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The user-message text.
    pub text: String,
    /// Its slots, left to right (empty: tokenize the rendered prompt whole).
    pub slots: Vec<&'static str>,
}

impl Prompt {
    fn new(text: String, slots: &[&'static str]) -> Self {
        Self { text, slots: slots.to_vec() }
    }
}

/// A style's prompt builder: the user prompt of a role, in a feedback round (>= 2) or not; `None`
/// for a role the style does not have.
pub type PromptFn = fn(Role, bool, &PromptContext<'_>) -> Option<Prompt>;

/// Whether the question lists lettered options (`(?mi)^\s*[A-D]\s*[\.\):\-]\s+`).
pub fn is_choice_question(question: &str) -> bool {
    static CHOICE_LINE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?mi)^\s*[A-D]\s*[\.\):\-]\s+").expect("constant regex"));
    CHOICE_LINE.is_match(question)
}

/// The right-stripped question, closed by the choice instruction unless it already asks to choose
/// the correct option (the reference's `ensure_choice_instruction`).
pub fn with_choice_instruction(question: &str) -> String {
    let q = py_rstrip(question);
    if q.to_lowercase().contains("choose the correct option") {
        q.to_owned()
    } else {
        format!("{q}\n\n{CHOICE_SUFFIX}")
    }
}

/// INTERFACE: the code-task instruction line.
fn interface(ctx: &PromptContext<'_>) -> String {
    match (ctx.code_task, ctx.fn_name) {
        (CodeTask::Function, Some(name)) => {
            format!("Implement and return the function `{name}` only.")
        }
        (CodeTask::Function, None) => "Implement and return the required function only.".to_owned(),
        (CodeTask::Complete, _) => "Write a complete program that reads from stdin and prints to stdout.".to_owned(),
    }
}

/// CTX: the task context block of the mixture, distillation and deliberation prompts.
fn task_context(ctx: &PromptContext<'_>) -> String {
    let q = ctx.question;
    match ctx.dataset.mas_task() {
        MasTask::Code => format!("{}\nThe programming problem is:\n{q}\n", interface(ctx)),
        MasTask::Choice => format!("The question is:\nQuestion:\n{}\n", with_choice_instruction(q)),
        MasTask::Math => format!("The question is:\nQuestion:\n{q}\n"),
    }
}

/// FINAL: the answer-format instruction closing the final agent's prompt.
fn final_instruction(ctx: &PromptContext<'_>) -> &'static str {
    match ctx.dataset.mas_task() {
        MasTask::Code => FINAL_CODE,
        MasTask::Choice => FINAL_CHOICE,
        MasTask::Math if is_choice_question(ctx.question) => FINAL_CHOICE,
        MasTask::Math => FINAL_MATH,
    }
}

/// Sequential styles (math, choice and code), including the round >= 2 planner quirk.
pub(crate) fn sequential(role: Role, feedback: bool, ctx: &PromptContext<'_>) -> Option<Prompt> {
    let q = ctx.question;
    let code = ctx.dataset.task() == Task::Code;
    let prompt = match role {
        // The release calls the round >= 2 planner without task types: math text even for code.
        Role::Planner if feedback => Prompt::new(
            format!(
                "You are a planner agent in a recursive multi-agent system.\nThis is round 2.\nQuestion:\n{q}\nFeedback signal from the previous solver round:\n{FEEDBACK_SLOT}\nUse the feedback as a soft correction signal to improve the plan.\nIf there is any conflict, prioritize the question constraints.\nOutput only a concise plan in the format:\n{STEP_FORMAT}"
            ),
            &[FEEDBACK_SLOT],
        ),
        Role::Planner if code => Prompt::new(
            format!(
                "You are a planner agent in a multi-agent coding system.\n{}\nThe programming problem is:\n{q}\nProvide a clear step-by-step plan (within 3-6 steps) to solve the problem.\nDo not write code.\nYour response should be in the format of:\n{STEP_FORMAT}",
                interface(ctx)
            ),
            &[],
        ),
        Role::Planner => Prompt::new(
            format!(
                "You are a planner agent in a multi-agent system.\nGive a plan for the question below.\nQuestion:\n{q}\nYour response should be in the format of:\n{STEP_FORMAT}"
            ),
            &[],
        ),
        Role::Critic if code => Prompt::new(
            format!(
                "You are a refiner agent in a multi-agent coding system.\n{}\n\n---\nThe programming problem is:\n{q}\nThe initial plan from the planner:\nInitial Plan:\n{PLANNER_SLOT}\nRefine the plan into a clearer and stronger step-by-step plan (within 3-6 steps).\nDo not write code.\nYour response should be in the format of:\n{STEP_FORMAT}",
                interface(ctx)
            ),
            &[PLANNER_SLOT],
        ),
        Role::Critic => Prompt::new(
            format!(
                "You are a refiner agent in a multi-agent system.\nThe question is:\nQuestion:\n{q}\nThe initial plan from the planner:\nInitial Plan:\n{PLANNER_SLOT}\nYou should refine the initial plan and respond with pure plan only in the format of:\n{STEP_FORMAT}"
            ),
            &[PLANNER_SLOT],
        ),
        Role::Solver if code => Prompt::new(
            format!(
                "You are a solver agent in a multi-agent coding system.\n{}\nHere is the refined plan:\nRefined Plan:\n{REFINED_SLOT}\n\n---\nThe programming problem is:\n{q}\n{FINAL_CODE}",
                interface(ctx)
            ),
            &[REFINED_SLOT],
        ),
        Role::Solver => {
            let (sep, fin) = solver_ending(ctx);
            Prompt::new(
                format!(
                    "You are a solver agent in a multi-agent system.\nHere is the refined plan:\nRefined Plan:\n{REFINED_SLOT}\nThe question is:\nQuestion:\n{q}{sep}{fin}"
                ),
                &[REFINED_SLOT],
            )
        }
        _ => return None,
    };
    Some(prompt)
}

/// The sequential solver's separator and final instruction.
fn solver_ending(ctx: &PromptContext<'_>) -> (&'static str, &'static str) {
    if !is_choice_question(ctx.question) {
        return (
            "\n\n",
            "Solve the question given information and put the final answer inside \\boxed{}, for example \\boxed{1}.",
        );
    }
    match ctx.dataset.choice_old_prompt() {
        2 => ("\n", "Final Choice: put only the option letter in \\boxed{}, e.g., \\boxed{A}."),
        _ => ("\n\n", FINAL_CHOICE),
    }
}

/// C_PLANNER_FB: the code planner's feedback prompt, which the release never uses (its
/// round >= 2 planner gets the math `PLANNER_FB`, see [`user_prompt`]); for experiments only.
pub fn code_planner_feedback_prompt(ctx: &PromptContext<'_>) -> Prompt {
    Prompt::new(
        format!(
            "You are a planner agent in a recursive multi-agent coding system.\nThis is a later recursive round.\n{}\nThe programming problem is:\n{}\nFeedback signal from the previous solver round:\n{FEEDBACK_SLOT}\nUse the feedback as a soft correction signal to improve the plan.\nIf there is any conflict, prioritize the problem constraints.\nProvide a clear step-by-step plan (within 3-6 steps) to solve the problem.\nDo not write code.\nYour response should be in the format of:\n{STEP_FORMAT}",
            interface(ctx),
            ctx.question
        ),
        &[FEEDBACK_SLOT],
    )
}

/// Mixture style.
pub(crate) fn mixture(role: Role, feedback: bool, ctx: &PromptContext<'_>) -> Option<Prompt> {
    let label = match role {
        Role::Math => "math expert",
        Role::Code => "code expert",
        Role::Science => "science expert",
        Role::Summarizer => {
            return Some(Prompt::new(
                format!(
                    "You are the summarizer agent in a multi-agent system.\nMath expert signal:\n{HIE_MATH_EXPERT_SLOT}\nCode expert signal:\n{HIE_CODE_EXPERT_SLOT}\nScience expert signal:\n{HIE_SCIENCE_EXPERT_SLOT}\n---\nYou may reference the three expert information.\nPlease reason step by step and solve the problem below:\n{}{}",
                    task_context(ctx),
                    final_instruction(ctx)
                ),
                &[HIE_MATH_EXPERT_SLOT, HIE_CODE_EXPERT_SLOT, HIE_SCIENCE_EXPERT_SLOT],
            ));
        }
        _ => return None,
    };
    let ctx_block = task_context(ctx);
    Some(if feedback {
        Prompt::new(
            format!(
                "You are the {label} in a multi-agent system.\nFeedback signal from the previous summarizer round:\n{HIE_FEEDBACK_SLOT}\nUse the feedback as a soft correction signal, and provide a concise updated expert answer for the summarizer.\n{ctx_block}"
            ),
            &[HIE_FEEDBACK_SLOT],
        )
    } else {
        Prompt::new(format!("You are the {label} in a multi-agent system.\n{ctx_block}"), &[])
    })
}

/// Distillation style.
pub(crate) fn distillation(role: Role, feedback: bool, ctx: &PromptContext<'_>) -> Option<Prompt> {
    let ctx_block = task_context(ctx);
    let prompt = match role {
        Role::Expert if feedback => Prompt::new(
            format!(
                "You are the expert agent in a multi-agent system.\nFeedback signal from the previous round:\n{DISTILL_FEEDBACK_SLOT}\nUse the feedback as a soft correction signal.\n{ctx_block}Provide a concise, execution-ready updated plan.\nDo not provide the final answer.\nYour response should be in the format:\n{STEP_FORMAT}"
            ),
            &[DISTILL_FEEDBACK_SLOT],
        ),
        Role::Expert => Prompt::new(
            format!(
                "You are the expert agent in a multi-agent system.\n{ctx_block}Provide a concise, execution-ready plan that the learner can follow.\nDo not provide the final answer.\nYour response should be in the format:\n{STEP_FORMAT}"
            ),
            &[],
        ),
        Role::Learner => Prompt::new(
            format!(
                "You are the learner executor in a multi-agent system.\nExpert plan:\n{DISTILL_EXPERT_SLOT}\nUse the expert plan as guidance, but prioritize the task constraints.\n---\n{ctx_block}{}",
                final_instruction(ctx)
            ),
            &[DISTILL_EXPERT_SLOT],
        ),
        _ => return None,
    };
    Some(prompt)
}

/// Deliberation style.
pub(crate) fn deliberation(role: Role, feedback: bool, ctx: &PromptContext<'_>) -> Option<Prompt> {
    const TOOLS_NOTE: &str = "You may use tools following the system instructions when helpful.\n";
    let ctx_block = task_context(ctx);
    let prompt = match role {
        Role::Reflector if feedback => Prompt::new(
            format!(
                "You are the reflector agent in a deliberation style multi-agent system.\nToolcaller feedback signal from the previous round:\n{DELIBERATION_FEEDBACK_SLOT}\nUse the feedback as a soft guidance.\n{TOOLS_NOTE}{ctx_block}"
            ),
            &[DELIBERATION_FEEDBACK_SLOT],
        ),
        Role::Reflector => Prompt::new(
            format!("You are the reflector agent in a deliberation style multi-agent system.\n{TOOLS_NOTE}{ctx_block}"),
            &[],
        ),
        Role::Toolcaller => Prompt::new(
            format!(
                "You are the toolcaller agent in a deliberation style multi-agent system.\nReflector signal:\n{DELIBERATION_REFLECTOR_SLOT}\nUse the reflector signal as soft guidance.\n{TOOLS_NOTE}---\n{ctx_block}{}",
                final_instruction(ctx)
            ),
            &[DELIBERATION_REFLECTOR_SLOT],
        ),
        _ => return None,
    };
    Some(prompt)
}
