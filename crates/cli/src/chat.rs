//! `tandem chat`: a conversation in the terminal.
//!
//! Each turn renders the whole history with the model's chat template. The new prompt starts
//! with the tokens of the previous prompt and answer, so the engine reuses their KV cache and
//! prefills only the new message (the stats line's "reused" count). Answers stream to stdout;
//! the prompt marker, notices and statistics go to stderr, so `tandem chat < questions >
//! answers` keeps just the answers.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tandem::engine::{Event, StopReason};
use tandem::tokenizer::ChatMessage;
use tandem::{Error, Result};

use crate::cli::{print_stats, GenArgs};

/// Set while an answer is generated: Ctrl-C then stops the answer instead of the program.
static GENERATING: AtomicBool = AtomicBool::new(false);
/// Set by Ctrl-C during an answer; the streaming callback sees it and cancels the generation.
static STOP: AtomicBool = AtomicBool::new(false);

const HELP: &str = "/reset clears the history, /exit (or Ctrl-D) quits; Ctrl-C stops an \
answer, and quits at the prompt";

fn on_ctrl_c() {
    if GENERATING.load(Ordering::SeqCst) {
        STOP.store(true, Ordering::SeqCst);
    } else {
        // At the prompt the main thread is blocked reading stdin: leave from here, the way a
        // shell program does on SIGINT.
        eprintln!();
        std::process::exit(130);
    }
}

pub fn run(gen: &GenArgs, system: Option<&str>) -> Result<()> {
    let mut engine = gen.engine()?;
    // A base model without a chat template (Gemma 3 270M) is refused here, before the first
    // question, with the tokenizer's message (Error::NoChatTemplate).
    engine.tokenizer.chat_template_or_default()?;
    let opts = gen.options()?;
    if let Err(e) = ctrlc::set_handler(on_ctrl_c) {
        eprintln!("warning: Ctrl-C will end the program, not just an answer ({e})");
    }
    let first: Vec<ChatMessage> = system.map(ChatMessage::system).into_iter().collect();
    let mut messages = first.clone();
    eprintln!(
        "tandem chat: {} on {} ({} decoding, at most {} tokens per answer)\n{HELP}",
        gen.model,
        engine.gpu.info.name,
        opts.method.name(),
        opts.max_tokens
    );
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut line = String::new();
    loop {
        eprint!("> ");
        line.clear();
        let n = stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("standard input", e))?;
        if n == 0 {
            eprintln!();
            break;
        }
        let input = line.trim();
        match input {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = first.clone();
                engine.reset();
                eprintln!("[history cleared]");
                continue;
            }
            _ if input.starts_with('/') => {
                eprintln!("{HELP}");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::user(input));
        let text = engine.tokenizer.apply_chat_template(&messages, true)?;
        let ids = engine.tokenizer.encode(&text, true)?;
        STOP.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let result = engine.generate(&ids, &opts, |ev| {
            let Event::Tokens { text, .. } = ev;
            let _ = write!(stdout, "{text}");
            let _ = stdout.flush();
            !STOP.load(Ordering::SeqCst)
        });
        GENERATING.store(false, Ordering::SeqCst);
        match result {
            Ok(out) => {
                println!();
                match out.stop_reason {
                    Some(StopReason::Cancelled) => eprintln!("[stopped]"),
                    Some(StopReason::Length) => {
                        eprintln!("[cut off at {} tokens (-n)]", opts.max_tokens)
                    }
                    _ => {}
                }
                print_stats(&engine, &out.stats);
                // What was shown stays in the history, a stopped answer included.
                messages.push(ChatMessage::assistant(out.text));
            }
            // Checked before any work: the conversation is intact without this message.
            Err(e @ Error::Context(_)) => {
                messages.pop();
                eprintln!("error: {e}; /reset starts a new conversation (or raise --ctx)");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
