"""llm.chat: streamed tokens and text, the conversation's prompt, and `llm chat` in a pipe and in a terminal."""

import codecs
import io
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.bpe import BPETokenizer, train_bpe
from llm.chat import ChatSession, Conversation, is_instruction_tuned, one_line, run_session, stream_text, stream_tokens
from llm.classifier import ClassifierConfig, build_classifier, save_classifier
from llm.cli import main
from llm.config import from_mapping
from llm.errors import LLMError
from llm.generate import generate
from llm.instruct import InstructConfig, finetune_instructions, format_prompt
from llm.modelio import load_model, save_model
from llm.modern import ModernConfig, ModernGPT
from llm.preference import DPOConfig, train_dpo
from llm.sampling import Sampler
from llm.tokenizers import EOT

from conftest import ROOT, tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")

ENTRIES = [{"instruction": f"{verb} {word}.", "input": "", "output": word}
           for verb in ("Say", "Please say", "Answer", "Reply") for word in ("yes", "no")]
CONTEXT = 64


def tiny_tokenizer() -> BPETokenizer:
    """A BPE tokenizer with a few merges learned from the requests, answers and prompt headers."""
    text = " ".join(format_prompt(e) + e["output"] for e in ENTRIES)
    return train_bpe(text, 300)


def tiny_model(architecture: str, vocab_size: int) -> torch.nn.Module:
    if architecture == "gpt":
        return tiny_gpt(vocab_size=vocab_size, context_length=CONTEXT)
    torch.manual_seed(0)
    return ModernGPT(ModernConfig(vocab_size=vocab_size, context_length=CONTEXT, n_layer=2, n_head=2, n_kv_head=1,
                                  d_model=16, zero_init_out=False))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Run directories as the commands write them: "ARCH-base" (model and tokenizer, as `llm train` leaves them),
    "ARCH-instruct" (one epoch of `finetune_instructions`, which adds results.json), for ARCH gpt and modern."""
    root = tmp_path_factory.mktemp("runs")
    tokenizer = tiny_tokenizer()
    config = from_mapping(InstructConfig, {"train": {"epochs": 1, "batch_size": 4, "lr": 1e-2, "warmup_steps": 0}})
    splits = {"train": ENTRIES, "validation": ENTRIES[:2], "test": ENTRIES[:2]}
    runs = {}
    for architecture in ("gpt", "modern"):
        model = tiny_model(architecture, tokenizer.vocab_size)
        runs[f"{architecture}-base"] = root / f"{architecture}-base"
        save_model(model, runs[f"{architecture}-base"] / "model.safetensors", tokenizer)
        runs[f"{architecture}-instruct"] = root / f"{architecture}-instruct"
        finetune_instructions(model, tokenizer, splits, config, runs[f"{architecture}-instruct"])
    return runs


def expected_answer(run: Path, request: str, max_new_tokens: int = 48) -> str:
    """What `llm chat` must print for `request` as the first turn: generate()'s greedy answer, up to end of text."""
    model, tokenizer = load_model(run / "model.safetensors")
    eot = tokenizer.special_ids[EOT]
    prompt = tokenizer.encode_ordinary(format_prompt({"instruction": request}))
    out = generate(model, torch.tensor([prompt]), max_new_tokens, eos_id=eot)[0, len(prompt):].tolist()
    return tokenizer.decode(out[: out.index(eot)] if eot in out else out)


def run_chat(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "llm", "chat", *args], input=stdin, capture_output=True,
                          text=True, encoding="utf-8", timeout=120, env=env)


# Streaming

@pytest.mark.parametrize("architecture", ["gpt", "modern"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_streamed_tokens_are_generates_tokens(architecture, temperature):
    model = tiny_model(architecture, 300).eval()
    prompt = torch.randint(0, 300, (1, 9), generator=torch.Generator().manual_seed(1))
    eos_id = None if temperature else 7  # with an end token, sampling would stop at random
    expected = generate(model, prompt, 30, sample=Sampler(temperature, seed=5), eos_id=eos_id)[0, 9:].tolist()
    streamed = list(stream_tokens(model, prompt[0].tolist(), 30, Sampler(temperature, seed=5), eos_id))
    assert streamed == (expected[: expected.index(7)] if eos_id in expected else expected)
    assert len(streamed) > 3  # the comparison covered more than the prefill step


def test_stream_tokens_refuses_what_would_not_fit_the_context():
    with pytest.raises(ValueError, match="exceed the context"):
        next(stream_tokens(tiny_model("gpt", 300), [1] * 60, 5))


def test_streamed_tokens_stop_at_end_of_text():
    model = tiny_model("gpt", 300).eval()
    first = list(stream_tokens(model, [1, 2, 3], 20))
    assert list(stream_tokens(model, [1, 2, 3], 20, eos_id=first[4])) == first[:first.index(first[4])]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 256), max_size=30))
def test_streamed_text_adds_up_to_decode(ids):
    tokenizer = BPETokenizer([])  # byte tokens: most sequences are not valid UTF-8, and some end mid-character
    assert "".join(stream_text(tokenizer, ids)) == tokenizer.decode(ids)


def test_streamed_text_waits_for_the_rest_of_a_character():
    tokenizer = BPETokenizer([])
    pieces = list(stream_text(tokenizer, tokenizer.encode_ordinary("né☕")))
    assert pieces == ["n", "é", "☕"]  # never half a character, never U+FFFD


# The conversation

def test_prompt_keeps_the_request_and_drops_the_oldest_turns():
    conversation = Conversation(BPETokenizer([]))
    conversation.turns = [[1] * 10, [2] * 20, [3] * 30]
    request = [9] * 5
    assert conversation.prompt(request, 100) == [1] * 10 + [2] * 20 + [3] * 30 + request
    assert conversation.prompt(request, 64) == [2] * 20 + [3] * 30 + request
    assert conversation.prompt(request, 35) == [3] * 30 + request
    assert conversation.prompt(request, 34) == request  # the latest turn does not fit: none older is taken either
    assert conversation.prompt([9] * 50, 10) == [9] * 50  # a request longer than the limit is kept whole


def test_turns_are_written_in_the_finetuning_format():
    tokenizer = BPETokenizer([])
    conversation = Conversation(tokenizer, preamble="Be brief.")
    request = conversation.request_ids("Say yes.")
    assert tokenizer.decode(request) == "Be brief.\n\n### Instruction:\nSay yes.\n\n### Response:\n"
    conversation.add(request, tokenizer.encode_ordinary("yes"))
    second = conversation.request_ids("Again.")
    assert tokenizer.decode(conversation.prompt(second, 200)) == (
        "Be brief.\n\n### Instruction:\nSay yes.\n\n### Response:\nyes" + EOT + tokenizer.decode(second))


@pytest.mark.parametrize("architecture", ["gpt", "modern"])
def test_session_remembers_turns_and_leaves_room_for_the_answer(architecture, runs):
    model, tokenizer = load_model(runs[f"{architecture}-instruct"] / "model.safetensors")
    session = ChatSession(model, tokenizer, max_new_tokens=20)
    answer = "".join(session.reply("Say yes."))
    assert answer == expected_answer(runs[f"{architecture}-instruct"], "Say yes.", 20)
    turn = session.conversation.turns[0]
    assert tokenizer.decode(turn) == format_prompt({"instruction": "Say yes."}) + answer + EOT
    "".join(session.reply("Say no."))
    assert len(session.conversation.turns) == 2
    # the next prompt takes at most CONTEXT - 20 tokens: the older turns go, the request stays
    long_request = " ".join(["yes"] * 30)
    prompt = session.conversation.prompt(session.conversation.request_ids(long_request), CONTEXT - 20)
    assert tokenizer.decode(prompt) == format_prompt({"instruction": long_request})
    with pytest.raises(LLMError, match="request too long"):
        "".join(session.reply(" ".join(["yes"] * 60)))
    session.reset()
    assert session.conversation.turns == []


def test_completion_mode_continues_the_end_of_the_text(runs):
    model, tokenizer = load_model(runs["gpt-base"] / "model.safetensors")
    session = ChatSession(model, tokenizer, mode="complete", max_new_tokens=10)
    text = "Say yes. " * 40  # longer than the context: its last tokens are continued
    ids = tokenizer.encode_ordinary(text)[-(CONTEXT - 10):]
    expected = generate(model, torch.tensor([ids]), 10, eos_id=tokenizer.special_ids[EOT])[0, len(ids):].tolist()
    eot = tokenizer.special_ids[EOT]
    assert "".join(session.reply(text)) == tokenizer.decode(expected[: expected.index(eot)] if eot in expected
                                                            else expected)
    assert session.conversation.turns == []


def test_one_line_escapes_every_line_break_reversibly():
    text = "a\nb\r\nc\\d\x0be\x85f\u2028g\u2029h é"
    line = one_line(text)
    assert len((line + "\n").splitlines()) == 1 and line.startswith("a\\nb\\r\\nc\\\\d\\x0be")
    assert codecs.decode(line.encode("latin-1", "backslashreplace"), "unicode_escape") == text


# The session loop

class FlushedOutput(io.StringIO):
    """A stdout that remembers what had been flushed, that is shown, when it was last flushed."""

    shown = ""

    def flush(self):
        self.shown = self.getvalue()


class ScriptedSession:
    """Stands in for ChatSession: answers "answer to X" in two pieces, and notes what `out` had shown of the first
    when asked for the second; a request "slow" is interrupted between the pieces, "huge" is refused."""

    def __init__(self, out=None):
        self.out, self.resets, self.shown = out, 0, []

    def reset(self):
        self.resets += 1

    def reply(self, request):
        if request == "huge":
            raise LLMError("request too long")
        yield "answer to "
        if request == "slow":
            raise KeyboardInterrupt
        if self.out is not None:
            self.shown.append(self.out.shown)
        yield f"{request}\nmore"


def test_pipe_mode_writes_one_line_per_request(capsys):
    out = FlushedOutput()
    session = ScriptedSession(out)
    run_session(session, io.StringIO("first\n\n  /reset  \nhuge\nsecond\n/quit\nnever\n"), out, interactive=False)
    assert out.getvalue() == "answer to first\\nmore\n\nanswer to second\\nmore\n"
    # each piece is shown before the next one is generated
    assert session.shown == ["answer to ", "answer to first\\nmore\n\nanswer to "]
    assert session.resets == 1 and capsys.readouterr().err == "llm chat: request too long\n"
    with pytest.raises(KeyboardInterrupt):  # without a terminal, Ctrl-C ends the command as usual
        run_session(session, io.StringIO("slow\n"), io.StringIO(), interactive=False)


def test_ctrl_c_in_a_terminal_stops_the_answer_and_the_session_goes_on():
    out = io.StringIO()
    run_session(ScriptedSession(), io.StringIO("slow\nfirst\n"), out, interactive=True)
    assert out.getvalue() == "> answer to  [stopped]\n> answer to first\nmore\n> \n"


# The command, in a pipe

def test_chat_in_a_pipe_answers_one_line_per_request(runs):
    run = runs["gpt-instruct"]
    result = run_chat("--model", str(run), stdin="Say yes.\n/reset\nSay no.\n")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.splitlines() == [one_line(expected_answer(run, "Say yes.")),
                                          one_line(expected_answer(run, "Say no."))]


def test_a_base_model_continues_text_and_says_so(runs):
    result = run_chat("--model", str(runs["modern-base"] / "model.safetensors"), "--max-new-tokens", "5",
                      "--temperature", "0.8", "--seed", "1", stdin="It was\nThe end\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert len(result.stderr.splitlines()) == 1 and "completion mode" in result.stderr


def test_mode_is_told_by_what_the_finetune_wrote(runs, tmp_path, capsys, monkeypatch):
    assert is_instruction_tuned(runs["modern-instruct"] / "model.safetensors")
    assert not is_instruction_tuned(runs["modern-base"] / "model.safetensors")
    model, tokenizer = load_model(runs["modern-instruct"] / "model.safetensors")
    pairs = [{"instruction": e["instruction"], "input": "", "chosen": e["output"], "rejected": "maybe"}
             for e in ENTRIES]
    config = from_mapping(DPOConfig, {"train": {"epochs": 1, "batch_size": 4}})
    train_dpo(model, tokenizer, {"train": pairs, "validation": pairs[:2], "test": pairs[:2]}, config, tmp_path)
    assert is_instruction_tuned(tmp_path / "model.safetensors")

    def notice(run, *flags):
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        assert main(["chat", "--model", str(run), *flags]) == 0
        return capsys.readouterr().err

    assert notice(runs["gpt-base"], "--mode", "chat") == ""
    assert "completion mode:" in notice(runs["gpt-instruct"], "--mode", "complete")


# The command's errors

def one_line_error(code: int, stderr: str, *needles: str) -> None:
    assert code == 2 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    for needle in needles:
        assert needle in stderr, stderr


def test_a_missing_model_is_one_line_from_the_command(tmp_path):
    result = run_chat("--model", str(tmp_path / "nowhere"))
    one_line_error(result.returncode, result.stderr, "llm chat: error:", "nowhere", "not found")


def test_models_chat_cannot_use_are_named_in_one_line(runs, tmp_path, capsys):
    def error(path, *needles, flags=()):
        one_line_error(main(["chat", "--model", str(path), *flags]), capsys.readouterr().err, *needles)

    model, tokenizer = load_model(runs["gpt-base"] / "model.safetensors")
    classifier = build_classifier(model, ClassifierConfig(labels=["ham", "spam"], max_length=16))
    save_classifier(classifier, tokenizer, tmp_path / "classifier")
    error(tmp_path / "classifier", "model.safetensors: not found", "classifier")
    error(tmp_path / "classifier" / "classifier.safetensors", "a classifier")

    no_tokenizer = tmp_path / "no-tokenizer"
    save_model(model, no_tokenizer / "model.safetensors")
    error(no_tokenizer, "tokenizer.bpe", "not found")

    corrupted = tmp_path / "corrupted"
    save_model(model, corrupted / "model.safetensors", tokenizer)
    data = (corrupted / "model.safetensors").read_bytes()
    (corrupted / "model.safetensors").write_bytes(data[: len(data) // 2])
    error(corrupted, "model.safetensors", "not a readable safetensors file")

    save_model(model, corrupted / "model.safetensors", tokenizer)
    (corrupted / "tokenizer.bpe").write_bytes(b"\xff\xfe garbage")
    error(corrupted, "tokenizer.bpe", "not a text file")

    wider = tmp_path / "wider-tokenizer"  # a tokenizer with more tokens than the model scores
    extra = [EOT] + [f"<|extra{i}|>" for i in range(5)]
    save_model(model, wider / "model.safetensors", BPETokenizer(tokenizer.merges, extra, tokenizer.pattern))
    error(wider, f"scores {tokenizer.vocab_size} tokens", f"has {tokenizer.vocab_size + 5}")

    error(runs["gpt-instruct"], "top_p", flags=("--top-p", "1.5"))


# The command, in a terminal

class Terminal:
    """`python -m llm chat ...` with a pseudo-terminal as its controlling terminal, as if typed at a shell."""

    def __init__(self, *args: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: stdin, stdout and stderr are the terminal
            try:
                os.execve(sys.executable, [sys.executable, "-m", "llm", "chat", *args], env)
            finally:
                os._exit(127)
        self.output = ""

    def read(self, timeout: float) -> bool:
        """Add what the command wrote within `timeout` seconds to `output`; False once it has closed the terminal."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # Linux's way of saying that the other side is closed
            data = b""
        self.output += data.decode("utf-8", errors="replace").replace("\r\n", "\n")
        return bool(data)

    def read_until(self, text: str, timeout: float = 60) -> str:
        """Everything the command writes (with the terminal's echo of what was typed) up to `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline or not self.read(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"no {text!r} from the command; it wrote {self.output!r}")
        found, _, self.output = self.output.partition(text)
        return found + text

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def exit_status(self, timeout: float = 30) -> int:
        """Wait for the command to end, reading what it writes meanwhile."""
        deadline = time.monotonic() + timeout
        while self.read(0.1):  # until the command closes the terminal, which it does as it exits
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                raise AssertionError(f"the command did not exit; it wrote {self.output!r}")
        os.close(self.fd)
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


def test_a_conversation_in_a_terminal(runs):
    run = runs["gpt-instruct"]
    terminal = Terminal("--model", str(run))
    assert "/reset" in terminal.read_until("> ")  # the banner says how to use it
    terminal.type("Say yes.\n")
    answer = terminal.read_until("\n> ")
    assert answer == f"Say yes.\n{expected_answer(run, 'Say yes.')}\n> "  # the echo of the request, then the answer
    terminal.type("/reset\n")
    assert terminal.read_until("> ") == "/reset\n(conversation forgotten)\n> "
    terminal.type("\x04")  # Ctrl-D
    assert terminal.exit_status() == 0


def test_ctrl_c_at_the_prompt_ends_the_session(runs):
    terminal = Terminal("--model", str(runs["modern-base"]))
    assert "completion mode" in terminal.read_until("> ")
    terminal.type("\x03")  # Ctrl-C
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.output
