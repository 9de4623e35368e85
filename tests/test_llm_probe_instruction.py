"""Which prompt tokens are PTP's instruction (``llm_probe.instruction_span``) and the end-of-turn ids."""
import pytest
import torch

import tiny_models as tm
from vtprune_kernels import PTP
from vtprune_kernels.integrations.llm_probe import end_of_turn_ids, instruction_span

IMG, END_IMG, EOS, IM_END = tm.IMAGE_TOKEN, tm.END_IMAGE_TOKEN, 2, 7


def _row(*tokens):
    return torch.tensor(tokens, dtype=torch.int64)


# text 5 6, <img>, 3 placeholders, </img>, "\n" 11, question 12 13 14, <|im_end|>, "\n<|im_start|>assistant\n" 15 16
CHAT = _row(5, 6, tm.START_IMAGE_TOKEN, IMG, IMG, IMG, END_IMG, 11, 12, 13, 14, IM_END, 15, 16)
LAST = 5  # position of the last placeholder


@pytest.mark.parametrize(
    "row, mode, end_of_turn, expected",
    [
        (CHAT, "text", (IM_END,), (7, 11)),  # "\n" + the question; no </img>, no template tail
        (CHAT, "text", (EOS, IM_END), (7, 11)),  # several eos ids: the first one present closes
        (CHAT, "text", (), (7, 14)),  # no known end-of-turn id: up to the end of the prompt
        (CHAT, "text", (EOS,), (7, 14)),  # eos id absent from the prompt (raw prompt): to the end
        (CHAT, "after_image", (IM_END,), (6, 14)),  # the published-code-like span: everything after
        (_row(IMG, IMG, END_IMG, IM_END, 15), "text", (IM_END,), (3, 3)),  # no instruction: empty span
        (_row(IMG, IMG), "text", (IM_END,), (2, 2)),  # the image ends the prompt
        (_row(IMG, IMG), "after_image", (IM_END,), (2, 2)),
    ],
)
def test_instruction_span(row, mode, end_of_turn, expected):
    last = int((row == IMG).nonzero().flatten()[-1])
    assert instruction_span(row, last, mode, end_of_turn) == expected


def test_instruction_span_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="instruction must be"):
        instruction_span(CHAT, LAST, "all", ())


def test_end_of_turn_ids_collects_every_eos_of_the_model():
    model = tm.internvl()
    model.generation_config.eos_token_id = [IM_END, 9]
    assert end_of_turn_ids(model) == (EOS, IM_END, 9)  # text config's eos 2 and the generation config's


def test_ptp_instruction_option_is_validated_and_shown():
    assert PTP().instruction == "text" and PTP().needs(True).instruction == "text"
    assert "instruction='after_image'" in repr(PTP(instruction="after_image"))
    with pytest.raises(ValueError, match="instruction must be one of"):
        PTP(instruction="question")
