//! The adapter's process: one request line in, one reply line out, with a deadline, and the
//! process killed when it is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest reply line taken (bytes): a longer one is garbage, not a reply.
pub const REPLY_BYTES_MAX: usize = 16 << 20;
/// How much of the end of the adapter's standard error a message quotes (bytes).
const STDERR_TAIL_BYTES: usize = 2048;
/// How long a closing adapter gets to exit by itself once its input is closed.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// What the stdout reader thread hands over: a line, the end of the output, or why it stopped.
enum Line {
    Text(String),
    End,
    Bad(String),
}

/// A running adapter program.
pub(crate) struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The command as the user wrote it, for messages.
    name: String,
}

impl Process {
    /// Starts `words` (a program and its arguments) with its input and output piped.
    pub fn spawn(words: &[String], name: &str) -> Result<Process, String> {
        let (program, args) = words.split_first().ok_or("the adapter's command is empty")?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the adapter `{name}`: {e}"))?;
        let stdin = child.stdin.take();
        let (sender, lines) = mpsc::sync_channel(4);
        if let Some(stdout) = child.stdout.take() {
            thread::spawn(move || read_lines(stdout, &sender));
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            let tail = Arc::clone(&stderr);
            thread::spawn(move || keep_tail(pipe, &tail));
        }
        Ok(Process { child, stdin, lines, stderr, name: name.to_string() })
    }

    /// Sends `request` as one line and waits up to `timeout` for one line back.
    pub fn request(&mut self, request: &str, timeout: Duration) -> Result<String, String> {
        match self.lines.try_recv() {
            Ok(Line::Text(line)) => {
                return Err(format!(
                    "the adapter `{}` wrote a line nobody asked for before {}: {}",
                    self.name,
                    shorten(request),
                    shorten(&line)
                ))
            }
            Ok(Line::End) | Err(TryRecvError::Disconnected) => return Err(self.exited(request)),
            Ok(Line::Bad(why)) => return Err(self.garbage(request, &why)),
            Err(TryRecvError::Empty) => {}
        }
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(format!("{request}\n").as_bytes()).and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        if written.is_err() {
            return Err(self.exited(request));
        }
        match self.lines.recv_timeout(timeout) {
            Ok(Line::Text(line)) => Ok(line),
            Ok(Line::End) | Err(RecvTimeoutError::Disconnected) => Err(self.exited(request)),
            Ok(Line::Bad(why)) => Err(self.garbage(request, &why)),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "the adapter `{}` did not answer {} within {} ms{}",
                self.name,
                shorten(request),
                timeout.as_millis(),
                self.stderr_tail()
            )),
        }
    }

    fn exited(&mut self, request: &str) -> String {
        let deadline = Instant::now() + EXIT_GRACE;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break format!("exited ({status})"),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => break "closed its output".to_string(),
                Err(e) => break format!("cannot be waited for ({e})"),
            }
        };
        format!(
            "the adapter `{}` {status} without answering {}{}",
            self.name,
            shorten(request),
            self.stderr_tail()
        )
    }

    fn garbage(&self, request: &str, why: &str) -> String {
        format!("the adapter `{}` answered {} with {why}{}", self.name, shorten(request), self.stderr_tail())
    }

    /// The end of the adapter's standard error, if it wrote any, as the end of a message.
    fn stderr_tail(&self) -> String {
        // Give the reader thread a moment to take what a dying adapter wrote last.
        thread::sleep(Duration::from_millis(20));
        let tail = match self.stderr.lock() {
            Ok(tail) => String::from_utf8_lossy(&tail).trim().to_string(),
            Err(_) => String::new(),
        };
        match tail.is_empty() {
            true => String::new(),
            false => format!("; the end of its standard error:\n{tail}"),
        }
    }
}

impl Drop for Process {
    /// Closes the adapter's input, gives it a moment to exit, then kills it; always reaps it.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads lines of at most [`REPLY_BYTES_MAX`] bytes from the adapter's output until its end.
fn read_lines(stdout: impl Read, sender: &mpsc::SyncSender<Line>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut bytes = Vec::new();
        let limit = u64::try_from(REPLY_BYTES_MAX).unwrap_or(u64::MAX).saturating_add(1);
        let line = match reader.by_ref().take(limit).read_until(b'\n', &mut bytes) {
            Ok(0) => Line::End,
            Ok(_) if !bytes.ends_with(b"\n") && bytes.len() > REPLY_BYTES_MAX => {
                Line::Bad(format!("a line longer than {REPLY_BYTES_MAX} bytes"))
            }
            Ok(_) => match String::from_utf8(bytes) {
                Ok(text) => Line::Text(text.trim_end_matches(['\n', '\r']).to_string()),
                Err(_) => Line::Bad("a line that is not UTF-8".into()),
            },
            Err(e) => Line::Bad(format!("an unreadable output ({e})")),
        };
        let last = !matches!(line, Line::Text(_));
        if sender.send(line).is_err() || last {
            return;
        }
    }
}

/// Keeps the last [`STDERR_TAIL_BYTES`] of the adapter's standard error.
fn keep_tail(mut stderr: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut buffer = [0u8; 4096];
    loop {
        let n = match stderr.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(mut kept) = tail.lock() else { return };
        kept.extend_from_slice(buffer.get(..n).unwrap_or_default());
        let excess = kept.len().saturating_sub(STDERR_TAIL_BYTES);
        kept.drain(..excess);
    }
}

/// `text`, cut to a length a message can quote.
pub(crate) fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 300;
    match text.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => format!("{}...", text.get(..at).unwrap_or(text)),
        None => text.to_string(),
    }
}
