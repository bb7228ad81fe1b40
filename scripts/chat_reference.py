#!/usr/bin/env python3
"""Reference renderings of the chat templates in tests/fixtures/chat/, made by HF transformers'
own renderer (`transformers.utils.chat_template_utils.render_jinja_template`, what
`apply_chat_template` calls), for the server's byte-for-byte template test
(`server::template::tests::renders_reference_templates_like_transformers`).

Needs `transformers` and `jinja2` (no torch: `python3 -m venv v && v/bin/pip install
transformers jinja2`). Dates from `strftime_now` are replaced by `<<TODAY:fmt>>` so the file does
not go stale; the test puts the day's date back the same way.

Usage: scripts/chat_reference.py [--out tests/fixtures/chat/reference.json]
"""

import argparse
import datetime
import json
import pathlib

from transformers.utils.chat_template_utils import render_jinja_template

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIR = ROOT / "tests/fixtures/chat"

# bos / eos token texts of each family's vocabulary.
TOKENS = {
    "meta-llama": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistralai": ("<s>", "</s>"),
    "Mistral": ("<s>", "</s>"),
    "Qwen": ("", "<|im_end|>"),
    "google": ("<bos>", "<eos>"),
    "compresskv": ("<bos>", "<eos>"),
}

CONVERSATIONS = {
    "one user turn": [{"role": "user", "content": "What is the capital of France?"}],
    "system and three turns": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about caches."},
    ],
    "multi-turn without system": [
        {"role": "user", "content": "  Spaces around me \n"},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Unicode: café, 東京, 🙂"},
    ],
    "roles out of order": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DIR / "reference.json"))
    a = ap.parse_args()
    now = datetime.datetime.now()
    out = []
    for tpl in sorted(DIR.glob("*.jinja")):
        source = tpl.read_text()
        family = next(k for k in TOKENS if tpl.name.startswith(k))
        bos, eos = TOKENS[family]
        for name, messages in CONVERSATIONS.items():
            for gen in (True, False):
                case = {"template": tpl.name, "conversation": name, "messages": messages,
                        "add_generation_prompt": gen, "bos_token": bos, "eos_token": eos}
                try:
                    rendered, _ = render_jinja_template(
                        conversations=[messages], chat_template=source,
                        add_generation_prompt=gen, bos_token=bos, eos_token=eos)
                    text = rendered[0]
                    for fmt in ("%d %b %Y", "%Y-%m-%d"):
                        text = text.replace(now.strftime(fmt), f"<<TODAY:{fmt}>>")
                    case["rendered"] = text
                except Exception as e:  # the template's raise_exception, or a Jinja error
                    case["error"] = str(e)
                out.append(case)
    pathlib.Path(a.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(out)} renderings of {len(list(DIR.glob('*.jinja')))} templates -> {a.out}")


if __name__ == "__main__":
    main()
