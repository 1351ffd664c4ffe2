"""The attention mask against the paper (section 3.2, appendix A.2, Figure 7)."""

import itertools

import pytest
import torch

from astra_core.layout import TokenLayout, attention_mask


def tokens_by_hand(L, M, N, T, queries):
    """(kind, step) of every token, written out independently of TokenLayout."""
    toks = [("p", 0)] * L
    for t in range(1, T + 1):
        toks += [("s", t)] * M + ([("q", t)] * N if queries else []) + [("a", t)] * N
    return toks


def expected_trajectory_entry(out, inp):
    """Paper rules: bidirectional inside a segment, causal between segments; queries read only."""
    (ko, to), (ki, ti) = out, inp
    if ki == "q":
        return False  # no token sees any query
    order = {"p": 0, "s": 1, "a": 2}
    if ko == "q":  # sees the prompt, states up to and including s_t, actions before a_t
        return ki == "p" or (ki == "s" and ti <= to) or (ki == "a" and ti < to)
    return (ti, order[ki]) <= (to, order[ko])


SIZES = [(1, 1, 1, 1), (4, 2, 3, 2), (3, 3, 7, 4), (5, 1, 6, 3)]


@pytest.mark.parametrize("L,M,N,T", SIZES)
@pytest.mark.parametrize("queries", [True, False])
def test_trajectory_mask_follows_the_paper_rules(L, M, N, T, queries):
    mask = attention_mask(L, M, N, T, action_queries=queries)
    toks = tokens_by_hand(L, M, N, T, queries)
    assert mask.shape == (len(toks), len(toks)) and mask.dtype == torch.bool
    for i, j in itertools.product(range(len(toks)), repeat=2):
        assert bool(mask[i, j]) == expected_trajectory_entry(toks[i], toks[j]), (i, j, toks[i], toks[j])


def test_figure_7a_small_example_written_out():
    # L=2, M=2, N=2, T=2 with queries. Columns: inputs, rows: outputs; 1 = attends.
    #            p p s s q q a a s s q q a a
    expected = """
    p1        1 1 0 0 0 0 0 0 0 0 0 0 0 0
    p2        1 1 0 0 0 0 0 0 0 0 0 0 0 0
    s1,1      1 1 1 1 0 0 0 0 0 0 0 0 0 0
    s2,1      1 1 1 1 0 0 0 0 0 0 0 0 0 0
    q1        1 1 1 1 0 0 0 0 0 0 0 0 0 0
    q2        1 1 1 1 0 0 0 0 0 0 0 0 0 0
    a1,1      1 1 1 1 0 0 1 1 0 0 0 0 0 0
    a2,1      1 1 1 1 0 0 1 1 0 0 0 0 0 0
    s1,2      1 1 1 1 0 0 1 1 1 1 0 0 0 0
    s2,2      1 1 1 1 0 0 1 1 1 1 0 0 0 0
    q1        1 1 1 1 0 0 1 1 1 1 0 0 0 0
    q2        1 1 1 1 0 0 1 1 1 1 0 0 0 0
    a1,2      1 1 1 1 0 0 1 1 1 1 0 0 1 1
    a2,2      1 1 1 1 0 0 1 1 1 1 0 0 1 1
    """
    rows = [[int(v) for v in line.split()[1:]] for line in expected.strip().splitlines()]
    assert attention_mask(2, 2, 2, 2, action_queries=True).int().tolist() == rows


def test_figure_7b_encoding_is_decoding_without_the_queries():
    dec = attention_mask(3, 2, 4, 3, action_queries=True)
    enc = attention_mask(3, 2, 4, 3, action_queries=False)
    layout = TokenLayout(3, 2, 4, 3, action_queries=True)
    keep = torch.tensor([k != 2 for k in layout.kind.tolist()])  # drop query rows and columns
    assert torch.equal(dec[keep][:, keep], enc)


@pytest.mark.parametrize("L,M,N,T", SIZES)
@pytest.mark.parametrize("queries", [True, False])
def test_extra_entries_over_causal_match_the_paper_formula(L, M, N, T, queries):
    traj = attention_mask(L, M, N, T, queries, "trajectory")
    causal = attention_mask(L, M, N, T, queries, "causal")
    assert not (causal & ~traj).any(), "causal attention must be a subset of trajectory attention"
    extra = int((traj & ~causal).sum())
    assert extra == L * (L - 1) // 2 + T * (M * (M - 1) // 2 + N * (N - 1) // 2)


def test_causal_mask_is_lower_triangular_without_query_columns():
    L, M, N, T = 3, 2, 3, 2
    causal = attention_mask(L, M, N, T, True, "causal")
    layout = TokenLayout(L, M, N, T, True)
    tri = torch.ones(layout.num_tokens, layout.num_tokens, dtype=torch.bool).tril()
    assert torch.equal(causal, tri & (layout.kind != 2)[None, :])


def test_autoregressive_action_segments_never_see_their_own_future_dimensions():
    L, M, N, T = 2, 2, 3, 2
    mask = attention_mask(L, M, N, T, False, "trajectory", causal_action_segments=True)
    layout = TokenLayout(L, M, N, T, False)
    for t in range(T):
        idx = layout.action_index[t]
        block = mask[idx][:, idx]
        assert torch.equal(block, torch.ones(N, N, dtype=torch.bool).tril())
    # states stay bidirectional
    s = layout.state_index[0]
    assert mask[s][:, s].all()
    # the Gato extra-entry count loses the action term
    causal = attention_mask(L, M, N, T, False, "causal")
    assert int((mask & ~causal).sum()) == L * (L - 1) // 2 + T * M * (M - 1) // 2


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="attention"):
        attention_mask(2, 2, 2, 2, True, "bidirectional")
    with pytest.raises(ValueError):
        attention_mask(0, 2, 2, 2, True)
