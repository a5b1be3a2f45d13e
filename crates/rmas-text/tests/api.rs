//! Behaviour of the public API: prompt builders (byte-exact literals from docs/algorithm.md, "Prompt templates"),
//! name parsing, tokenizer loading errors, slot splitting and chat-template edge cases.

use chrono::NaiveDate;
use rmas_text::prompts::{self, HIE_FEEDBACK_SLOT, PLANNER_SLOT};
use rmas_text::{
    ChatMessage, ChatOptions, Dataset, MasTask, Prompt, PromptContext, Role, Style, Task, TextError, Tokenizer,
    TokenizerFiles, system_prompt, user_prompt,
};

use crate::common::{fixture, model_tokenizer};

const Q: &str = "What is 2+3?";
const GPQA_Q: &str = "Which is right?\nA. one\nB. two\nC. three\nD. four";
const STEPS: &str = "Step 1: ...\n...\nStep n: ...";

fn prompt(style: Style, role: Role, round: usize, ctx: &PromptContext<'_>) -> Prompt {
    user_prompt(style, role, round, ctx).unwrap_or_else(|e| panic!("{style:?} {role:?} r{round}: {e}"))
}

fn math(question: &str) -> PromptContext<'_> {
    PromptContext::new(question, Dataset::Math500)
}

#[test]
fn example_6_8_mixture_summarizer() {
    let p = prompt(Style::Mixture, Role::Summarizer, 1, &math(Q));
    assert_eq!(
        p.text,
        "You are the summarizer agent in a multi-agent system.\nMath expert signal:\n<<HIE_MATH_EXPERT_SLOT>>\nCode expert signal:\n<<HIE_CODE_EXPERT_SLOT>>\nScience expert signal:\n<<HIE_SCIENCE_EXPERT_SLOT>>\n---\nYou may reference the three expert information.\nPlease reason step by step and solve the problem below:\nThe question is:\nQuestion:\nWhat is 2+3?\nSolve the question and put the final answer inside \\boxed{}, for example \\boxed{1}."
    );
    assert_eq!(p.slots, ["<<HIE_MATH_EXPERT_SLOT>>", "<<HIE_CODE_EXPERT_SLOT>>", "<<HIE_SCIENCE_EXPERT_SLOT>>"]);
}

#[test]
fn mixture_experts_and_choice_context() {
    let p = prompt(Style::Mixture, Role::Science, 1, &math(Q));
    assert_eq!(
        p.text,
        "You are the science expert in a multi-agent system.\nThe question is:\nQuestion:\nWhat is 2+3?\n"
    );
    assert!(p.slots.is_empty());
    let medqa = PromptContext::new("Pick one\nA. x\nB. y  \n", Dataset::MedQa);
    let p = prompt(Style::Mixture, Role::Math, 3, &medqa);
    assert_eq!(
        p.text,
        "You are the math expert in a multi-agent system.\nFeedback signal from the previous summarizer round:\n<<HIE_FEEDBACK_SLOT>>\nUse the feedback as a soft correction signal, and provide a concise updated expert answer for the summarizer.\nThe question is:\nQuestion:\nPick one\nA. x\nB. y\n\nChoose the correct option (A/B/C/D).\n"
    );
    assert_eq!(p.slots, [HIE_FEEDBACK_SLOT]);
    // The suffix is not repeated when present; FINAL(choice) closes the summarizer.
    let gpqa = PromptContext::new("Q\nA. x\n\nChoose the correct option (A/B/C/D).", Dataset::Gpqa);
    let p = prompt(Style::Mixture, Role::Summarizer, 1, &gpqa);
    assert!(p.text.ends_with(
        "Question:\nQ\nA. x\n\nChoose the correct option (A/B/C/D).\nSolve the question and put the final choice inside \\boxed{}, for example \\boxed{A}."
    ));
    // FINAL(math, q) switches to the choice instruction for lettered questions.
    assert!(prompt(Style::Mixture, Role::Summarizer, 1, &math(GPQA_Q)).text.ends_with("for example \\boxed{A}."));
}

#[test]
fn code_context_and_interfaces() {
    let ctx = PromptContext::new("Add numbers.", Dataset::MbppPlus).with_fn_name("add");
    let p = prompt(Style::Mixture, Role::Code, 1, &ctx);
    assert_eq!(
        p.text,
        "You are the code expert in a multi-agent system.\nImplement and return the function `add` only.\nThe programming problem is:\nAdd numbers.\n"
    );
    let p = prompt(Style::Mixture, Role::Summarizer, 1, &PromptContext::new("Add.", Dataset::MbppPlus));
    assert!(p.text.ends_with(
        "Implement and return the required function only.\nThe programming problem is:\nAdd.\nSolve the problem and put the final code inside one markdown code block, for example ```python\\n<your solution code>\\n```."
    ));
    let lcb = PromptContext::new("Read n.", Dataset::LiveCodeBench);
    assert!(prompt(Style::Mixture, Role::Math, 1, &lcb).text.ends_with(
        "Write a complete program that reads from stdin and prints to stdout.\nThe programming problem is:\nRead n.\n"
    ));
}

#[test]
fn sequential_math_prompts() {
    let ctx = math(Q);
    let planner = prompt(Style::SequentialLight, Role::Planner, 1, &ctx);
    assert_eq!(
        planner.text,
        format!(
            "You are a planner agent in a multi-agent system.\nGive a plan for the question below.\nQuestion:\nWhat is 2+3?\nYour response should be in the format of:\n{STEPS}"
        )
    );
    assert!(planner.slots.is_empty());
    let feedback = prompt(Style::SequentialScaled, Role::Planner, 3, &ctx);
    assert_eq!(
        feedback.text,
        format!(
            "You are a planner agent in a recursive multi-agent system.\nThis is round 2.\nQuestion:\nWhat is 2+3?\nFeedback signal from the previous solver round:\n<<LATENT_FEEDBACK_SLOT>>\nUse the feedback as a soft correction signal to improve the plan.\nIf there is any conflict, prioritize the question constraints.\nOutput only a concise plan in the format:\n{STEPS}"
        )
    );
    let critic = prompt(Style::SequentialLight, Role::Critic, 2, &ctx);
    assert_eq!(
        critic.text,
        format!(
            "You are a refiner agent in a multi-agent system.\nThe question is:\nQuestion:\nWhat is 2+3?\nThe initial plan from the planner:\nInitial Plan:\n<<LATENT_PLANNER_SLOT>>\nYou should refine the initial plan and respond with pure plan only in the format of:\n{STEPS}"
        )
    );
    assert_eq!(critic.slots, [PLANNER_SLOT]);
    let solver = prompt(Style::SequentialLight, Role::Solver, 1, &ctx);
    assert_eq!(
        solver.text,
        "You are a solver agent in a multi-agent system.\nHere is the refined plan:\nRefined Plan:\n<<LATENT_REFINED_SLOT>>\nThe question is:\nQuestion:\nWhat is 2+3?\n\nSolve the question given information and put the final answer inside \\boxed{}, for example \\boxed{1}."
    );
}

#[test]
fn sequential_solver_choice_modes() {
    let solver = |dataset| prompt(Style::SequentialLight, Role::Solver, 1, &PromptContext::new(GPQA_Q, dataset)).text;
    assert!(
        solver(Dataset::Gpqa)
            .ends_with("D. four\nFinal Choice: put only the option letter in \\boxed{}, e.g., \\boxed{A}.")
    );
    assert!(
        solver(Dataset::MedQa).ends_with(
            "D. four\n\nSolve the question and put the final choice inside \\boxed{}, for example \\boxed{A}."
        )
    );
    assert!(
        solver(Dataset::Math500).ends_with(
            "D. four\n\nSolve the question and put the final choice inside \\boxed{}, for example \\boxed{A}."
        )
    );
    // GPQA mode applies only to lettered questions.
    let plain = prompt(Style::SequentialLight, Role::Solver, 1, &PromptContext::new(Q, Dataset::Gpqa));
    assert!(plain.text.ends_with("What is 2+3?\n\nSolve the question given information and put the final answer inside \\boxed{}, for example \\boxed{1}."));
}

#[test]
fn sequential_code_prompts_and_planner_quirk() {
    let ctx = PromptContext::new("Sum a list.", Dataset::MbppPlus).with_fn_name("total");
    let planner = prompt(Style::SequentialLight, Role::Planner, 1, &ctx);
    assert_eq!(
        planner.text,
        format!(
            "You are a planner agent in a multi-agent coding system.\nImplement and return the function `total` only.\nThe programming problem is:\nSum a list.\nProvide a clear step-by-step plan (within 3-6 steps) to solve the problem.\nDo not write code.\nYour response should be in the format of:\n{STEPS}"
        )
    );
    let critic = prompt(Style::SequentialLight, Role::Critic, 1, &ctx);
    assert_eq!(
        critic.text,
        format!(
            "You are a refiner agent in a multi-agent coding system.\nImplement and return the function `total` only.\n\n---\nThe programming problem is:\nSum a list.\nThe initial plan from the planner:\nInitial Plan:\n<<LATENT_PLANNER_SLOT>>\nRefine the plan into a clearer and stronger step-by-step plan (within 3-6 steps).\nDo not write code.\nYour response should be in the format of:\n{STEPS}"
        )
    );
    let solver = prompt(Style::SequentialLight, Role::Solver, 2, &ctx);
    assert_eq!(
        solver.text,
        "You are a solver agent in a multi-agent coding system.\nImplement and return the function `total` only.\nHere is the refined plan:\nRefined Plan:\n<<LATENT_REFINED_SLOT>>\n\n---\nThe programming problem is:\nSum a list.\nSolve the problem and put the final code inside one markdown code block, for example ```python\\n<your solution code>\\n```."
    );
    // Round >= 2: the release uses the math PLANNER_FB even on code datasets.
    let quirk = prompt(Style::SequentialLight, Role::Planner, 2, &ctx);
    assert!(quirk.text.starts_with(
        "You are a planner agent in a recursive multi-agent system.\nThis is round 2.\nQuestion:\nSum a list.\n"
    ));
    let unused = prompts::code_planner_feedback_prompt(&ctx);
    assert_eq!(
        unused.text,
        format!(
            "You are a planner agent in a recursive multi-agent coding system.\nThis is a later recursive round.\nImplement and return the function `total` only.\nThe programming problem is:\nSum a list.\nFeedback signal from the previous solver round:\n<<LATENT_FEEDBACK_SLOT>>\nUse the feedback as a soft correction signal to improve the plan.\nIf there is any conflict, prioritize the problem constraints.\nProvide a clear step-by-step plan (within 3-6 steps) to solve the problem.\nDo not write code.\nYour response should be in the format of:\n{STEPS}"
        )
    );
}

#[test]
fn distillation_prompts() {
    let ctx = math(Q);
    assert_eq!(
        prompt(Style::Distillation, Role::Expert, 1, &ctx).text,
        format!(
            "You are the expert agent in a multi-agent system.\nThe question is:\nQuestion:\nWhat is 2+3?\nProvide a concise, execution-ready plan that the learner can follow.\nDo not provide the final answer.\nYour response should be in the format:\n{STEPS}"
        )
    );
    let fb = prompt(Style::Distillation, Role::Expert, 2, &ctx);
    assert_eq!(
        fb.text,
        format!(
            "You are the expert agent in a multi-agent system.\nFeedback signal from the previous round:\n<<DISTILL_FEEDBACK_SLOT>>\nUse the feedback as a soft correction signal.\nThe question is:\nQuestion:\nWhat is 2+3?\nProvide a concise, execution-ready updated plan.\nDo not provide the final answer.\nYour response should be in the format:\n{STEPS}"
        )
    );
    assert_eq!(fb.slots, ["<<DISTILL_FEEDBACK_SLOT>>"]);
    let learner = prompt(Style::Distillation, Role::Learner, 1, &ctx);
    assert_eq!(
        learner.text,
        "You are the learner executor in a multi-agent system.\nExpert plan:\n<<DISTILL_EXPERT_SLOT>>\nUse the expert plan as guidance, but prioritize the task constraints.\n---\nThe question is:\nQuestion:\nWhat is 2+3?\nSolve the question and put the final answer inside \\boxed{}, for example \\boxed{1}."
    );
    assert_eq!(learner.slots, ["<<DISTILL_EXPERT_SLOT>>"]);
}

#[test]
fn deliberation_prompts() {
    let ctx = math(Q);
    assert!(system_prompt(Style::Deliberation).starts_with("You are a helpful assistant that can solve the given question step by step with the help of the wikipedia search tool"));
    assert!(
        system_prompt(Style::Deliberation)
            .ends_with("the final exact answer is enclosed within \\boxed{} with latex format.")
    );
    assert_eq!(system_prompt(Style::Mixture), "You are a helpful assistant.");
    assert_eq!(
        prompt(Style::Deliberation, Role::Reflector, 1, &ctx).text,
        "You are the reflector agent in a deliberation style multi-agent system.\nYou may use tools following the system instructions when helpful.\nThe question is:\nQuestion:\nWhat is 2+3?\n"
    );
    let fb = prompt(Style::Deliberation, Role::Reflector, 2, &ctx);
    assert_eq!(
        fb.text,
        "You are the reflector agent in a deliberation style multi-agent system.\nToolcaller feedback signal from the previous round:\n<<DELIBERATION_FEEDBACK_SLOT>>\nUse the feedback as a soft guidance.\nYou may use tools following the system instructions when helpful.\nThe question is:\nQuestion:\nWhat is 2+3?\n"
    );
    let tool = prompt(Style::Deliberation, Role::Toolcaller, 1, &ctx);
    assert_eq!(
        tool.text,
        "You are the toolcaller agent in a deliberation style multi-agent system.\nReflector signal:\n<<DELIBERATION_REFLECTOR_SLOT>>\nUse the reflector signal as soft guidance.\nYou may use tools following the system instructions when helpful.\n---\nThe question is:\nQuestion:\nWhat is 2+3?\nSolve the question and put the final answer inside \\boxed{}, for example \\boxed{1}."
    );
    assert_eq!(tool.slots, ["<<DELIBERATION_REFLECTOR_SLOT>>"]);
}

#[test]
fn every_style_role_has_a_prompt_and_others_are_rejected() {
    let ctx = math(Q);
    for style in Style::ALL {
        for role in Role::ALL {
            let result = user_prompt(style, role, 1, &ctx);
            if style.roles().contains(&role) {
                assert!(result.is_ok(), "{style:?} {role:?}");
            } else {
                let err = result.expect_err("role outside the style");
                assert!(err.to_string().contains(role.key()), "{err}");
            }
        }
        assert!(style.roles().contains(&style.final_role()));
        assert_eq!(style.key().parse::<Style>().ok(), Some(style));
        assert_eq!(style.cli_name().parse::<Style>().ok(), Some(style));
        assert_eq!(style.to_string(), style.cli_name());
    }
    assert_eq!(Style::SequentialLight.cli_name(), "sequential-light");
    assert_eq!("Sequential_Scaled".parse::<Style>().ok(), Some(Style::SequentialScaled));
    assert!(matches!(user_prompt(Style::Mixture, Role::Math, 0, &ctx), Err(TextError::InvalidRound(0))));
}

#[test]
fn names_and_task_resolution() {
    assert_eq!("refiner".parse::<Role>().ok(), Some(Role::Critic));
    assert_eq!(" HuggingFaceH4/MATH-500 ".parse::<Dataset>().ok(), Some(Dataset::Math500));
    assert_eq!("evalplus/mbppplus".parse::<Dataset>().map(Dataset::task).ok(), Some(Task::Code));
    assert_eq!(Dataset::Gpqa.task(), Task::Math);
    assert_eq!(Dataset::Gpqa.mas_task(), MasTask::Choice);
    assert_eq!(Dataset::MedQa.choice_old_prompt(), 0);
    assert_eq!(Dataset::Gpqa.choice_old_prompt(), 2);
    assert!(Style::Distillation.is_task_scoped() && !Style::Deliberation.is_task_scoped());
    let err = "gsm9k".parse::<Dataset>().expect_err("unknown dataset");
    assert!(err.to_string().contains("gsm9k") && err.to_string().contains("math500"), "{err}");
    assert_eq!(Task::from_dataset(" LiveCodeBench "), Task::Code);
    assert_eq!(Task::from_dataset("gsm9k"), Task::Math);
    for task in Task::ALL {
        assert_eq!(task.to_string().parse::<Task>().ok(), Some(task));
    }
    let err = "poetry".parse::<Task>().expect_err("unknown task");
    assert!(err.to_string().contains("poetry"), "{err}");
    assert_eq!(Role::Critic.to_string(), "critic");
    assert!(Role::Planner < Role::Toolcaller);
    assert!(prompts::is_choice_question("Q\n b) two"));
    assert!(!prompts::is_choice_question("A.B. is a person"));
}

#[test]
fn missing_slot_error_names_the_slot() {
    let tok = model_tokenizer("qwen3");
    let err = tok.encode_segments("no slots here", &[PLANNER_SLOT]).expect_err("missing slot");
    assert!(err.to_string().contains(PLANNER_SLOT), "{err}");
    let pieces = tok.encode_segments(&format!("{PLANNER_SLOT}tail"), &[PLANNER_SLOT]).expect("segments");
    assert_eq!(pieces, vec![vec![], tok.encode("tail", false).expect("encode")]);
}

#[test]
fn biomistral_rejects_system_and_is_merged() {
    let tok = model_tokenizer("mistral");
    let opts = ChatOptions::recursivemas(NaiveDate::from_ymd_opt(2024, 7, 26).expect("date"));
    let messages = [ChatMessage::new("system", "S"), ChatMessage::new("user", "U")];
    let err = tok.render_chat(&messages, &opts).expect_err("system role");
    assert!(err.to_string().contains("Conversation roles must alternate"), "{err}");
    assert_eq!(tok.render_prompt("S", "U", &opts).expect("merged"), "<s>[INST] S\n\nU [/INST]");
}

/// A tokenizer built from the qwen3 fixture's tokenizer.json with the given extra files.
fn qwen3_with(config: &str, template: Option<&str>, generation: Option<&str>) -> Result<Tokenizer, TextError> {
    let json = std::fs::read(fixture("models/qwen3/model/tokenizer.json")).expect("tokenizer.json");
    Tokenizer::from_bytes(TokenizerFiles {
        origin: "mem",
        tokenizer_json: &json,
        tokenizer_config: Some(config.as_bytes()),
        chat_template: template,
        generation_config: generation.map(str::as_bytes),
    })
}

#[test]
fn config_variants_and_errors() {
    let tok = qwen3_with(
        r#"{"eos_token": {"content": "<|im_end|>"}, "pad_token": null}"#,
        None,
        Some(r#"{"eos_token_id": 1200}"#),
    )
    .expect("load");
    let im_end = tok.token_to_id("<|im_end|>");
    assert_eq!(tok.eos_token_id(), im_end);
    assert_eq!(tok.pad_token_id(), None);
    assert_eq!(tok.generation_eos_ids().to_vec(), [Some(1200), im_end].into_iter().flatten().collect::<Vec<_>>());
    let err = tok.render_chat(&[], &ChatOptions::recursivemas(NaiveDate::MIN)).expect_err("no template");
    assert!(matches!(err, TextError::NoChatTemplate { .. }), "{err}");

    let err = qwen3_with(r#"{"eos_token": "<|nope|>"}"#, None, None).expect_err("unknown eos");
    assert!(err.to_string().contains("<|nope|>") && err.to_string().contains("eos_token"), "{err}");
    let err = qwen3_with("{", None, None).expect_err("bad json");
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    let err = qwen3_with("{}", None, Some(r#"{"eos_token_id": "x"}"#)).expect_err("bad eos id");
    assert!(err.to_string().contains("generation_config.json") && err.to_string().contains("eos_token_id"), "{err}");
}

#[test]
fn config_template_tojson_and_invalid_templates() {
    let opts = ChatOptions::recursivemas(NaiveDate::from_ymd_opt(2024, 7, 26).expect("date"));
    let messages = [ChatMessage::new("user", "<b>&'\"é")];
    let tok = qwen3_with(r#"{"chat_template": "{{ messages | tojson }}"}"#, None, None).expect("load");
    assert_eq!(tok.render_chat(&messages, &opts).expect("render"), r#"[{"role": "user", "content": "<b>&'\"é"}]"#);

    let tok = qwen3_with("{}", Some("{% for m in messages %}{{ m.content "), None).expect("load");
    let err = tok.render_chat(&messages, &opts).expect_err("syntax error");
    assert!(matches!(err, TextError::Template { ref template, .. } if template == "mem/chat_template.jinja"), "{err}");
}

#[test]
fn dataset_rows_build_the_reference_questions() {
    use rmas_text::{RowQuestion, row_question};
    use serde_json::json;
    let q = |dataset, row| row_question(dataset, &row, 42).unwrap_or_else(|e| panic!("{e}"));
    let math = q(Dataset::Math500, json!({"problem": "  What is $1+1$?\n", "answer": "2"}));
    assert_eq!(math, RowQuestion { question: "  What is $1+1$?\n".into(), fn_name: None });
    // A `question` column wins over `problem`, as in the reference.
    assert_eq!(q(Dataset::Aime25, json!({"problem": "p", "question": "q"})).question, "q");
    // MBPP+: stripped prompt, the first three tests, the name from the test script's last assertion.
    let row = json!({
        "prompt": "\n Write a function to add two numbers. \n",
        "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0", "assert add(5, 5) == 10"],
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\nassertion(add_two(1, 2), 3, 0)\n",
        "code": "def plus(a, b):\n    return a + b",
    });
    let mbpp = q(Dataset::MbppPlus, row.clone());
    assert_eq!(
        mbpp.question,
        "Write a function to add two numbers.\n\nYour solution should satisfy assertions like:\nassert add(1, 2) == 3\nassert add(0, 0) == 0\nassert add(-1, 1) == 0"
    );
    assert_eq!(mbpp.fn_name.as_deref(), Some("add_two"));
    // Without assertion(...): the script's last `assert name(`, then the test list's, then the code's def.
    let with = |patch: serde_json::Value| {
        let mut r = row.clone();
        r.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        q(Dataset::MbppPlus, r).fn_name
    };
    assert_eq!(with(json!({"test": "assert first(1)\nassert second (2)"})).as_deref(), Some("second"));
    assert_eq!(with(json!({"test": ""})).as_deref(), Some("add"));
    assert_eq!(with(json!({"test": "", "test_list": []})).as_deref(), Some("plus"));
    assert_eq!(with(json!({"test": "", "test_list": [], "code": "x = 1"})), None);
    assert_eq!(q(Dataset::MbppPlus, json!({"prompt": "P"})).question, "P");
    // LiveCodeBench: a functional problem names its function; its prompt is a function task.
    let lcb = q(
        Dataset::LiveCodeBench,
        json!({
            "question_content": " Sum the list.\n",
            "starter_code": "class Solution:\n    def total(self, xs):\n",
            "metadata": "{\"func_name\": \"total\"}",
        }),
    );
    assert_eq!(lcb.question, "Sum the list.\n\nStarter code:\nclass Solution:\n    def total(self, xs):\n");
    assert_eq!(lcb.fn_name.as_deref(), Some("total"));
    let ctx = PromptContext::new(&lcb.question, Dataset::LiveCodeBench).with_fn_name("total");
    assert!(
        prompt(Style::Mixture, Role::Code, 1, &ctx).text.contains("Implement and return the function `total` only.")
    );
    let stdin =
        q(Dataset::LiveCodeBench, json!({"question_content": "Read n.", "starter_code": "  ", "metadata": "{}"}));
    assert_eq!(stdin, RowQuestion { question: "Read n.".into(), fn_name: None });
    let ctx = PromptContext::new(&stdin.question, Dataset::LiveCodeBench);
    assert!(
        prompt(Style::Mixture, Role::Code, 1, &ctx).text.contains("Write a complete program that reads from stdin")
    );
    // GPQA: the stripped stem and answers, in the order CPython's md5-seeded shuffle gives for the
    // run's seed (expected texts printed by the reference loader's code under CPython 3.11).
    let noble = json!({"Question": "  Which gas is a noble gas?\n", "Correct Answer": " Argon ", "Incorrect Answer 1": "Nitrogen", "Incorrect Answer 2": "Oxygen\n", "Incorrect Answer 3": "Hydrogen"});
    let choose = "\n\nChoose the correct option (A/B/C/D).";
    assert_eq!(
        q(Dataset::Gpqa, noble.clone()).question,
        format!("Which gas is a noble gas?\nA. Oxygen\nB. Nitrogen\nC. Argon\nD. Hydrogen{choose}")
    );
    assert_eq!(
        row_question(Dataset::Gpqa, &noble, 7).unwrap().question,
        format!("Which gas is a noble gas?\nA. Hydrogen\nB. Nitrogen\nC. Argon\nD. Oxygen{choose}")
    );
    // Either key spelling; blank values fall through to the next key; integers print as Python's str.
    let prime = prime_row();
    assert_eq!(q(Dataset::Gpqa, prime).question, format!("Pick the prime.\nA. 10\nB. 9\nC. 8\nD. 7{choose}"));
    let planets = json!({"Question": "Which is largest? Choose the correct option below.", "Correct Answer": "Jupiter", "Incorrect Answer 1": "Mars", "Incorrect Answer 2": "Venus", "Incorrect Answer 3": "Earth"});
    assert_eq!(
        q(Dataset::Gpqa, planets).question,
        "Which is largest? Choose the correct option below.\nA. Earth\nB. Venus\nC. Jupiter\nD. Mars"
    );
    // MedQA: options one per line unless the text letters its own; a dict of options is not a list.
    let fever = json!({"question": " A 30-year-old man has a fever. What is the diagnosis? ", "options": ["A. Flu", "B. Cold", "C. Measles", "D. Mumps"]});
    assert_eq!(
        q(Dataset::MedQa, fever).question,
        format!("A 30-year-old man has a fever. What is the diagnosis?\nA. Flu\nB. Cold\nC. Measles\nD. Mumps{choose}")
    );
    let lettered = json!({"query": "", "question": "Which drug?\na) Aspirin\nb) Heparin", "options": ["A. Aspirin", "B. Heparin"]});
    assert_eq!(q(Dataset::MedQa, lettered).question, format!("Which drug?\na) Aspirin\nb) Heparin{choose}"));
    assert_eq!(
        q(Dataset::MedQa, json!({"query": "Which vitamin?", "options": {"A": "C", "B": "D"}})).question,
        format!("Which vitamin?{choose}")
    );
    assert_eq!(
        q(Dataset::MedQa, json!({"question": "Which one? Choose the correct option (A/B/C/D).  \n", "options": []}))
            .question,
        "Which one? Choose the correct option (A/B/C/D)."
    );
    // Bad rows and datasets without a builder name the dataset and what is missing.
    let err = |dataset, row| row_question(dataset, &row, 42).unwrap_err().to_string();
    assert_eq!(
        err(Dataset::MbppPlus, json!({"task_id": 1})),
        "mbppplus row: no string field `prompt` (fields: task_id)"
    );
    assert!(
        err(Dataset::Math500, json!(["x"])).contains("not a JSON object but an array"),
        "{}",
        err(Dataset::Math500, json!(["x"]))
    );
    assert!(
        err(Dataset::LiveCodeBench, json!({"question_content": "q", "metadata": "{"}))
            .contains("`metadata` is not JSON")
    );
    assert!(
        err(Dataset::Gpqa, json!({"Question": "q"}))
            .starts_with("gpqa row: no non-empty field `Correct Answer` or `correct_answer` (fields: Question)"),
        "{}",
        err(Dataset::Gpqa, json!({"Question": "q"}))
    );
    assert!(
        err(Dataset::MedQa, json!({"query": "q", "options": ["x", ["y"]]}))
            .contains("`options` holds [\"y\"], not a string")
    );
    // The QA sets take their question as it is; gold answers come from `answer`.
    assert_eq!(q(Dataset::HotpotQa, json!({"question": " Who? ", "answer": "Ada"})).question, "Who?");
    assert!(
        err(Dataset::Bamboogle, json!({"answer": "x"}))
            .starts_with("bamboogle row: no non-empty field `question` or `Question`")
    );
    assert_eq!(rmas_text::row_gold(Dataset::Gsm8k, &json!({"question": "q", "answer": 18}), 42).unwrap(), "18");
    assert!(
        rmas_text::row_gold(Dataset::Math500, &json!({"problem": "q"}), 42)
            .unwrap_err()
            .to_string()
            .contains("no gold answer")
    );
    // GPQA's gold is the letter the correct answer lands on.
    assert_eq!(rmas_text::row_gold(Dataset::Gpqa, &prime_row(), 42).unwrap(), "D");
}

/// A GPQA row whose correct answer (7) lands on D for seed 42.
fn prime_row() -> serde_json::Value {
    serde_json::json!({"Question": "", "question": "Pick the prime.", "correct_answer": 7, "incorrect_answer_1": "8", "Incorrect Answer 2": "  ", "incorrect_answer_2": "9", "incorrect_answer_3": "10"})
}
