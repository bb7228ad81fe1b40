"""Talks to a running `compresskv serve` with the official `openai` Python client.

Checks what a client relies on: the model list, a completion, a chat completion, a streamed chat
(chunks, then `usage`), the `kv_compression` extension through `extra_body`, and an API error
raised as `openai.BadRequestError`. Prints one line per check; exits 1 on the first failure.

    pip install openai
    compresskv serve --chat-template-file integrations/openai/gemma3-chat.jinja &
    python integrations/openai/check.py --base-url http://127.0.0.1:8080/v1
"""

from __future__ import annotations

import argparse
import sys

import openai


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--api-key", default="none")
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)

    model = client.models.list().data[0].id
    print(f"models: {model}")

    c = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert c.choices[0].finish_reason in ("stop", "length"), c
    print(f"completion: {c.choices[0].text!r} ({c.usage.completion_tokens} tokens)")

    msgs = [{"role": "user", "content": "Name one colour of the rainbow."}]
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0)
    text = r.choices[0].message.content
    assert r.choices[0].message.role == "assistant" and text, r
    print(f"chat: {text!r}")

    parts, usage = [], None
    for chunk in client.chat.completions.create(
        model=model, messages=msgs, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        usage = getattr(chunk, "usage", None) or usage
    assert "".join(parts) == text, (parts, text)
    print(f"chat streamed: {len(parts)} chunks, same text; usage {usage}")

    full = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0,
        extra_body={"kv_compression": {"method": "full"}},
    )
    print(f"kv_compression full: {full.choices[0].text!r}, {full.model_extra['kv_compression']}")

    try:
        client.completions.create(model=model, prompt="x", max_tokens=0)
        sys.exit("max_tokens=0 was accepted")
    except openai.BadRequestError as e:
        print(f"bad request raised as BadRequestError: {e.status_code}")
    print("ok")


if __name__ == "__main__":
    main()
