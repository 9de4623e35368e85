"""M-RoPE bookkeeping of a pruned prompt (integrations/mrope.py, prompt_surgery.PromptLayout).

Worked example: one row "a <img 2x3 merged> b" unpruned. get_rope_index gives text 'a' position 0,
the image cells (t=1, rows 1..2, cols 1..3), 'b' max + 1 = 4. Pruning 4 of the 6 cells must keep
every surviving token's column exactly and the next position at 5.
"""
import pytest
import torch

from vtprune_kernels.integrations.mrope import kept_position_columns, mrope_position_deltas
from vtprune_kernels.integrations.prompt_surgery import locate_images, plan_prompt

P = 90
UNPRUNED = torch.tensor(
    [  # t, h, w of: a, 6 image cells (2 x 3), b
        [0, 1, 1, 1, 1, 1, 1, 4],
        [0, 1, 1, 1, 2, 2, 2, 4],
        [0, 1, 2, 3, 1, 2, 3, 4],
    ]
)


def test_kept_columns_and_next_position():
    keep = torch.tensor([True, False, False, False, False, True, False, True])
    kept = kept_position_columns(UNPRUNED, keep)
    assert kept.tolist() == [[0, 1, 4], [0, 2, 4], [0, 2, 4]]
    # unpruned: delta = 5 - 8 = -3; pruned to 3 tokens: 5 - 3 = 2, so the next token sits at 3 + 2 = 5
    assert mrope_position_deltas(UNPRUNED[:, None], None).tolist() == [[-3]]
    assert mrope_position_deltas(kept[:, None], None).tolist() == [[2]]
    with pytest.raises(ValueError, match="keep"):
        kept_position_columns(UNPRUNED, keep[:-1])


@pytest.mark.parametrize("side", ["left", "right"])
def test_layout_gathers_position_columns_with_padding(side):
    ids = torch.tensor([[0, 5, P, P, P, P, P, P, 6], [7, P, P, P, P, P, P, 8, 9]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 9])
    if side == "right":
        ids[0], mask[0] = ids[0].roll(-1), mask[0].roll(-1)
    positions = torch.zeros(3, 2, 9, dtype=torch.long)
    positions[:, 0, mask[0].bool()] = UNPRUNED
    positions[:, 1, :8] = UNPRUNED
    positions[:, 1, 8] = 5
    images = locate_images(ids, P, [6, 6])
    keep = [torch.tensor([True, False, False, False, False, True]), torch.tensor([False] * 5 + [True])]
    layout = plan_prompt(ids, mask, images, keep)
    gathered = layout.gather(positions, 0)
    new_mask = layout.attention_mask()
    assert layout.side == side and gathered.shape == (3, 2, 4) and new_mask.tolist() == [[1] * 4] * 2
    assert gathered[:, 0].tolist() == [[0, 1, 1, 4], [0, 1, 2, 4], [0, 1, 3, 4]]  # a, cells 0 and 5, b
    assert gathered[:, 1].tolist() == [[0, 1, 4, 5], [0, 2, 4, 5], [0, 3, 4, 5]]  # cell 5, then text
    assert mrope_position_deltas(gathered, new_mask).tolist() == [[1], [2]]
    # one more kept cell in row 0: row 1 gets padded, on the prompt's side
    keep[0][1] = True
    layout = plan_prompt(ids, mask, images, keep)
    gathered, new_mask = layout.gather(positions, 0), layout.attention_mask()
    assert new_mask[1].tolist() == ([0, 1, 1, 1, 1] if side == "left" else [1, 1, 1, 1, 0])
    assert gathered[:, 1][:, new_mask[1].bool()].tolist() == [[0, 1, 4, 5], [0, 2, 4, 5], [0, 3, 4, 5]]
    assert mrope_position_deltas(gathered, new_mask).tolist() == [[0], [2]]
    assert layout.gather(ids, 0)[1][new_mask[1].bool()].tolist() == [7, P, 8, 9]
