"""A real ``vllm serve`` on 127.0.0.1 with the switch on, queried over HTTP with the OpenAI client
(LLaVA-1.5 with a CLIP tower, Qwen2.5-VL and Qwen3-VL).

The reply must be the text of transformers + ``apply()`` on the same chat prompt, and
``usage.prompt_tokens`` the unpruned prompt length minus exactly the pruned tokens. A bad
configuration makes ``vllm serve`` exit at start with the reason.
"""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import checkpoints
from harness import MAX_NEW_TOKENS, image, reference
from vtprune_kernels import VisPruner
from vtprune_kernels.integrations.vllm import hf_overrides

KEEP = 7
START_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(path: str, overrides: dict, port: int, log):
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1")  # the server's usual layout: API server + engine core
    command = [
        os.path.join(os.path.dirname(sys.executable), "vllm"), "serve", path, "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "512", "--max-num-seqs", "2",
        "--hf-overrides", json.dumps(overrides), "--limit-mm-per-prompt", json.dumps({"image": 1}),
    ]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# name: (checkpoint builder, architecture, picture (width, height), tokens the picture becomes unpruned)
SERVED = {
    "llava": (lambda p: checkpoints.llava(p, "clip"), "LlavaForConditionalGeneration", (70, 70), (70 // 14) ** 2),
    # 112 x 84 px: 8 x 6 patches of 14 px, merged 2 x 2 into 4 x 3 tokens (M-RoPE positions of the kept ones)
    "qwen2_5_vl": (checkpoints.qwen2_5_vl, "Qwen2_5_VLForConditionalGeneration", (112, 84), 12),
    # 128 x 96 px: 8 x 6 patches of 16 px, 4 x 3 merged tokens (and their DeepStack features)
    "qwen3_vl": (checkpoints.qwen3_vl, "Qwen3VLForConditionalGeneration", (128, 96), 12),
}


@pytest.fixture(scope="module")
def checkpoint(checkpoint_dir):
    return checkpoints.llava(f"{checkpoint_dir}/serve", "clip")


@pytest.mark.parametrize("name", list(SERVED))
def test_chat_request_over_http_is_pruned(name, checkpoint_dir):
    import httpx
    import openai
    from transformers import AutoProcessor

    build, architecture, (width, height), full = SERVED[name]
    path, model = build(f"{checkpoint_dir}/serve-{name}")
    port = _free_port()
    with tempfile.TemporaryFile(mode="w+") as log:
        server = _serve(path, hf_overrides(architecture, "vispruner", KEEP, step=2), port, log)
        try:
            deadline = time.time() + START_TIMEOUT_S
            while True:
                if server.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"vllm serve exited with {server.returncode}:\n{log.read()[-4000:]}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.time() < deadline, "vllm serve did not become healthy in time"
                time.sleep(2)

            picture = image(width, height, seed=40)
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
            reply = client.chat.completions.create(
                model=path,
                messages=[{"role": "user", "content": [
                    {"type": "text", "text": "What is this? "}, {"type": "image_url", "image_url": {"url": url}},
                ]}],
                max_tokens=MAX_NEW_TOKENS, temperature=0.0, extra_body={"ignore_eos": True},
            )
        finally:
            _stop(server)

    processor = AutoProcessor.from_pretrained(path)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "What is this? "}, {"type": "image"}]}],
        add_generation_prompt=True, tokenize=False,
    )
    tokens, _ = reference(model, processor, VisPruner(keep=KEEP, step=2), prompt, [picture])
    # the server decodes as vLLM does by default: special tokens (e.g. an ignored eos) left out
    assert reply.choices[0].message.content == processor.tokenizer.decode(tokens, skip_special_tokens=True)
    unpruned = processor(text=[prompt], images=[picture], return_tensors="pt")["input_ids"].shape[1]
    assert reply.usage.prompt_tokens == unpruned - (full - KEEP)
    assert reply.usage.completion_tokens == MAX_NEW_TOKENS


def test_serve_refuses_a_bad_configuration_at_start(checkpoint):
    path, _ = checkpoint
    with tempfile.TemporaryFile(mode="w+") as log:
        server = _serve(path, hf_overrides("LlavaForConditionalGeneration", "ptp", KEEP), _free_port(), log)
        try:
            server.wait(timeout=START_TIMEOUT_S)
        finally:
            _stop(server)
        log.seek(0)
        output = log.read()
    assert server.returncode != 0
    assert "vtprune method 'ptp' cannot run in vLLM" in output, output[-3000:]
