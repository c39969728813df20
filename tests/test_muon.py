"""Muon: Newton-Schulz orthogonalisation, parity with torch.optim.Muon and AdamW, parameter routing, checkpoints."""

import io
import json

import pytest
import torch
from torch import nn

from llm.attention import Linear
from llm.model import GPT, GPTConfig
from llm.muon import Muon, MuonWithAdamW, muon_parameters, muon_with_adamw, orthogonalize
from llm.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # small matrices: threads only wait for each other

TINY = dict(vocab_size=32, context_length=8, n_layer=2, n_head=2, d_model=16, bias=True)


def windows(n_tokens: int = 2_000, period: int = 5, length: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    tokens = torch.arange(n_tokens) % period
    return [(tokens[i:i + length], tokens[i + 1:i + length + 1]) for i in range(0, n_tokens - length - 1, 3)]


class ToyBlock(nn.Module):
    """The parameter layout of a modern MoE block: RMSNorm gains, bias-free projections, a router, stacked experts."""

    def __init__(self, d: int = 16, n_expert: int = 4, d_expert: int = 8) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(d)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.router = nn.Linear(d, n_expert, bias=False)
        self.up_proj = nn.Parameter(torch.randn(n_expert, d_expert, d) * 0.1)
        self.down_proj = nn.Parameter(torch.randn(n_expert, d, d_expert) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.q_proj(self.attn_norm(x))
        weights = self.router(h).softmax(-1)                                   # [B, T, E]
        experts = torch.einsum("btd,efd->btef", h, self.up_proj).relu()        # [B, T, E, d_expert]
        out = torch.einsum("btef,edf->bted", experts, self.down_proj)          # [B, T, E, d]
        return x + (weights.unsqueeze(-1) * out).sum(2)


class ToyModern(nn.Module):
    def __init__(self, vocab: int = 32, d: int = 16) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(ToyBlock(d) for _ in range(2))
        self.final_norm = nn.RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.final_norm(x))


def routing(model: nn.Module) -> tuple[set[str], set[str]]:
    """(names trained by Muon, names trained by AdamW) in the optimizer `muon_with_adamw` builds."""
    optimizer = muon_with_adamw(model, TrainConfig())
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.param_groups if g["use_muon"] for p in g["params"]}
    adamw = {names[id(p)] for g in optimizer.param_groups if not g["use_muon"] for p in g["params"]}
    assert not muon & adamw and muon | adamw == set(names.values())
    return muon, adamw


def random_steps(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()


@pytest.mark.parametrize("shape", [(48, 160), (160, 48), (64, 64)])
def test_orthogonalize_gives_singular_values_near_one_along_the_svd_directions(shape):
    torch.manual_seed(0)  # singular values spread over 1.5 decades (a random square matrix has some near 0)
    k = min(shape)
    u, v = torch.linalg.qr(torch.randn(shape[0], k))[0], torch.linalg.qr(torch.randn(shape[1], k))[0]
    g = u @ torch.diag(3 * torch.logspace(-1.5, 0, k)) @ v.T
    o = orthogonalize(g).float()
    assert o.shape == g.shape
    s = torch.linalg.svdvals(o)
    assert 0.6 < s.min() and s.max() < 1.25
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    exact = u @ vh
    assert (o * exact).sum() / (o.norm() * exact.norm()) > 0.97  # same directions as U V^T


def test_orthogonalize_treats_each_matrix_of_a_stack_alone():
    torch.manual_seed(0)
    stack = torch.randn(3, 24, 40) * torch.tensor([0.01, 1.0, 100.0]).view(3, 1, 1)
    together = orthogonalize(stack)
    for i in range(3):
        torch.testing.assert_close(together[i], orthogonalize(stack[i]))


@pytest.mark.parametrize("adjust_lr", ["original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_takes_the_steps_of_torch_optim_muon(adjust_lr, nesterov):
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(shape)) for shape in [(64, 32), (32, 96), (48, 48)]]
    ours.append(Linear(40, 24).weight)  # column-major storage
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    hyper = dict(lr=0.03, momentum=0.9, nesterov=nesterov, weight_decay=0.1, ns_steps=5)
    random_steps(Muon(ours, adjust_lr=adjust_lr, **hyper), ours, steps=6, seed=1)
    random_steps(torch.optim.Muon(theirs, adjust_lr_fn=adjust_lr, ns_coefficients=(3.4445, -4.7750, 2.0315),
                                  **hyper), theirs, steps=6, seed=1)
    for a, b, a0 in zip(ours, theirs, start):
        assert (a - a0).abs().max() > 0.01
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_adamw_groups_take_the_steps_of_torch_optim_adamw():
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(shape)) for shape in [(7, 5), (5,), (3, 4, 2)]]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    groups = [{"params": ours[:1], "lr": 1e-2, "weight_decay": 0.1, "use_muon": False},
              {"params": ours[1:], "lr": 3e-3, "weight_decay": 0.0, "use_muon": False}]
    random_steps(MuonWithAdamW(groups, betas=(0.9, 0.95), eps=1e-8), ours, steps=5, seed=2)
    torch_groups = [{"params": theirs[:1], "lr": 1e-2, "weight_decay": 0.1},
                    {"params": theirs[1:], "lr": 3e-3, "weight_decay": 0.0}]
    random_steps(torch.optim.AdamW(torch_groups, betas=(0.9, 0.95), eps=1e-8), theirs, steps=5, seed=2)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_stacked_expert_matrices_step_like_separate_matrices():
    torch.manual_seed(0)
    stacked = nn.Parameter(torch.randn(4, 12, 20))
    separate = [nn.Parameter(stacked.detach()[i].clone()) for i in range(4)]
    muon_stacked, muon_separate = Muon([stacked], lr=0.05), Muon(separate, lr=0.05)
    for _ in range(3):
        grad = torch.randn(4, 12, 20)
        stacked.grad = grad
        for i, p in enumerate(separate):
            p.grad = grad[i].clone()
        muon_stacked.step()
        muon_separate.step()
    torch.testing.assert_close(stacked.detach(), torch.stack([p.detach() for p in separate]), rtol=0, atol=1e-6)


def test_muon_refuses_vectors_and_unknown_shape_corrections():
    with pytest.raises(ValueError, match="matrices"):
        Muon([nn.Parameter(torch.zeros(5))])
    with pytest.raises(ValueError, match="adjust_lr"):
        Muon([nn.Parameter(torch.zeros(5, 5))], adjust_lr="sqrt")


@pytest.mark.parametrize("tie_weights", [True, False])
def test_gpt_routing_gives_block_matrices_to_muon_and_the_rest_to_adamw(tie_weights):
    model = GPT(GPTConfig(**TINY, tie_weights=tie_weights))
    muon, adamw = routing(model)
    block_linears = {f"blocks.{i}.{m}.weight" for i in range(2)
                     for m in ["attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"]}
    assert muon == block_linears
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "blocks.0.ln_1.weight", "blocks.1.mlp.fc.bias"} <= adamw
    assert ("lm_head.weight" in adamw) == (not tie_weights)
    optimizer = muon_with_adamw(model, TrainConfig(weight_decay=0.1))
    decayed = {n for g in optimizer.param_groups if not g["use_muon"] and g["weight_decay"] > 0
               for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    assert decayed == (set() if tie_weights else {"lm_head.weight"})  # chapter 4's rule for what AdamW keeps


def test_modern_layout_routing_sends_each_expert_stack_and_the_router_to_muon():
    muon, adamw = routing(ToyModern())
    assert muon == {f"blocks.{i}.{n}" for i in range(2)
                    for n in ["q_proj.weight", "router.weight", "up_proj", "down_proj"]}
    assert adamw == {"tok_emb.weight", "lm_head.weight", "final_norm.weight", "blocks.0.attn_norm.weight",
                     "blocks.1.attn_norm.weight"}


def test_modern_gpt_routing():
    modern = pytest.importorskip("llm.modern")
    config = modern.ModernConfig(vocab_size=32, context_length=8, n_layer=2, n_head=2, d_model=16, n_expert=4,
                                 n_expert_active=2, d_expert=8)
    model = modern.ModernGPT(config)
    muon, adamw = routing(model)
    assert muon == {n for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() >= 2}
    assert any(p.dim() == 3 for n, p in model.named_parameters() if n in muon)
    assert {"tok_emb.weight", "lm_head.weight", "final_norm.weight"} <= adamw


def test_muon_with_adamw_needs_blocks():
    with pytest.raises(ValueError, match="blocks"):
        muon_parameters(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="blocks"):
        muon_with_adamw(nn.Sequential(nn.Linear(3, 3)), TrainConfig())


def test_state_dict_round_trip_resumes_identically():
    def build() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = ToyModern()
        return model, muon_with_adamw(model, TrainConfig(lr=1e-2), muon_lr=0.03)

    x = torch.randint(0, 32, (4, 6))

    def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad()
            model(x).logsumexp(-1).mean().backward()
            optimizer.step()

    straight, straight_opt = build()
    train(straight, straight_opt, 6)
    first, first_opt = build()
    train(first, first_opt, 3)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": first_opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # as llm.checkpoint loads it
    resumed, resumed_opt = build()
    resumed.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["optimizer"])
    train(resumed, resumed_opt, 3)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_trainer_with_muon_learns_and_resumes_exactly(tmp_path):
    class Crash(Exception):
        pass

    def run(out_dir, crash_at=None, resume=False):
        def on_eval(model, step):
            if step == crash_at:
                raise Crash
            return {}

        torch.manual_seed(0)
        config = TrainConfig(max_steps=12, batch_size=8, lr=1e-2, warmup_steps=2, eval_interval=6, eval_batches=1,
                             log_interval=3, checkpoint_interval=3, out_dir=str(out_dir), progress=False,
                             device="cpu")
        trainer = Trainer(GPT(GPTConfig(**TINY)), windows(), windows(200), config, on_eval=on_eval,
                          make_optimizer=muon_with_adamw)
        if resume:
            trainer.load(out_dir / "checkpoint.pt")
        try:
            trainer.fit()
        except Crash:
            pass
        records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
        return trainer, [(r["step"], r.get("loss"), r.get("val_loss"), r.get("lr")) for r in records]

    straight, straight_log = run(tmp_path / "straight")
    run(tmp_path / "resumed", crash_at=6)  # dies in step 6's evaluation: the checkpoint is step 3's
    resumed, resumed_log = run(tmp_path / "resumed", resume=True)
    assert resumed_log == straight_log
    assert straight_log[-1][2] < straight_log[0][2]  # validation loss fell
    lrs = {g["use_muon"]: g["lr"] for g in straight.optimizer.param_groups}
    assert straight.scheduler.get_last_lr()[0] == lrs[False]  # the logged lr stays AdamW's, the config's
    assert lrs[True] == pytest.approx(0.02 / 1e-2 * lrs[False])  # the schedule scales Muon's alike
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
