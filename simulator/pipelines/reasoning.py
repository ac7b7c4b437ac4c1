"""The ``reasoning`` stage: multi-step generation scored by a reward model, or N parallel
branches that share the prompt's KV blocks and are judged by the reward model.

Sequential: ``steps`` (drawn per request) x (think ``step_tokens`` on the generator, keeping
its KV there so the next step prefills only what is new; the reward deployment scores the
context), then the answer. Parallel: one prefill of the prompt, then ``branches`` samples
decode side by side on the same replica — full prompt blocks shared, the last partial block
copied (vLLM n>1) — then each is scored and one is kept as the answer.
"""
from __future__ import annotations

from profiling.errors import HermesError

from .network import Place
from .schema import StageConfig
from .stage import BuildContext, Stage, draw, spawn


class Reasoning(Stage):
    """``sequential``: ``steps`` x (think ``step_tokens`` on the generator, then the reward
    deployment scores the context), then the answer. ``parallel``: one prefill, then
    ``branches`` samples decode side by side sharing the prompt's KV blocks (vLLM n>1),
    the reward deployment scores each and one is kept as the answer."""

    kind = "reasoning"

    def __init__(self, cfg: StageConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        base = self.label
        self.label = f"{base}_answer"           # what is left after the last score: the answer
        self.labels = [f"{base}_think", f"{base}_reward", self.label]
        self.state: dict[int, list] = {}
        self.owner: dict[int, int] = {}         # branch / scoring sub-request -> request
        gen = ctx.llms.get(cfg.deployment)
        if cfg.mode == "parallel" and gen is not None and hasattr(gen, "decode"):
            raise HermesError(f"stage '{base}': parallel branches need an aggregated deployment "
                              f"('{cfg.deployment}' is disaggregated)")

    def place_of(self, rid: int) -> Place | None:
        return self.ctx.places.get(self.cfg.deployment)

    def _mark(self, rid: int, label: str, t: float) -> None:
        self.pipe.mark(rid, label, t)

    def start(self, rid: int, t: float) -> None:
        self.gen, self.rm = self._llm(self.cfg.deployment, rid), self._llm(self.cfg.reward, rid)
        if self.cfg.mode == "parallel":
            self.call_llm(self.gen, rid, t, self.pipe.prompt[rid], 1, self.pipe.cached[rid], self._fork)
            return
        steps = draw(self.cfg.steps, self.ctx.rng)
        self.state[rid] = [steps, self.pipe.prompt[rid], self.pipe.cached[rid]]
        self._think(rid, t)

    # sequential ------------------------------------------------------------------------------
    def _think(self, rid: int, t: float) -> None:
        s = self.state[rid]
        n = draw(self.cfg.step_tokens, self.ctx.rng)
        s.append(n)
        self.call_llm(self.gen, rid, t, s[1], n, s[2], self._thought)

    def _thought(self, rid: int, t: float) -> None:
        s = self.state[rid]
        n = s.pop()
        self.pipe.generated[rid] += n
        self.pipe.kv_written(rid)
        s[2] = s[1] + n - 1                       # the KV stays on the generator (prefix reuse)
        s[1] += n
        self._mark(rid, self.labels[0], t)
        self.call_llm(self.rm, rid, t, s[1], 1, 0, self._scored)

    def _scored(self, rid: int, t: float) -> None:
        s = self.state[rid]
        self._mark(rid, self.labels[1], t)
        s[0] -= 1
        if s[0] > 0:
            self._think(rid, t)
            return
        self.call_llm(self.gen, rid, t, s[1], self.pipe.answer[rid], s[2], self._answered)

    def _answered(self, rid: int, t: float) -> None:
        s = self.state.pop(rid)
        self.pipe.generated[rid] += self.pipe.answer[rid]
        self.pipe.prompt[rid] = s[1]
        self.pipe.advance(rid, t)

    # parallel --------------------------------------------------------------------------------
    def _fork(self, rid: int, t: float) -> None:
        st, p = self.ctx.store, self.pipe
        p.kv_written(rid)
        rep = self.gen.replicas[st.where[rid]]
        prompt = p.prompt[rid]
        lens = [p.answer[rid]] + [draw(self.cfg.step_tokens, self.ctx.rng) for _ in range(self.cfg.branches - 1)]
        kids = []
        for i, g in enumerate(lens):
            c = spawn(st, prompt, g)
            if i:                               # full prompt blocks are shared, the last one copied
                st.shared[c] = prompt // rep.bs
            p.pending[c] = self._branch_done
            kids.append(c)
        self.state[rid] = [len(kids), lens, kids, prompt]
        for c in kids:
            self.owner[c] = rid
            rep.accept_decode(c, t, prompt)

    def _branch_done(self, c: int, t: float) -> None:
        rid = self.owner.pop(c)
        s = self.state[rid]
        s[0] -= 1
        if s[0]:
            return
        self._mark(rid, self.labels[0], t)
        _, lens, _, prompt = s
        self.pipe.generated[rid] += sum(lens)
        s[0] = len(lens)
        for g in lens:
            c = spawn(self.ctx.store, prompt + g, 1)
            self.owner[c] = rid
            self.call_llm(self.rm, c, t, prompt + g, 1, 0, self._branch_scored)

    def _branch_scored(self, c: int, t: float) -> None:
        rid = self.owner.pop(c)
        s = self.state[rid]
        s[0] -= 1
        if s[0]:
            return
        self._mark(rid, self.labels[1], t)
        del self.state[rid]
        self.pipe.advance(rid, t)
