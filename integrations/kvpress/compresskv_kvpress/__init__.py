"""CompressKV (arXiv 2508.02401) for HF transformers through kvpress.

`CompressKVPress` reads the JSON that `compresskv profile export` writes (schema
`compresskv.profile-export`, version 1) and, at prefill, keeps per layer the tokens the
layer's Semantic Retrieval Heads attend to, the same set for every KV head — the selection the
`compresskv` runtime makes with `generate --method compresskv --budget B`.
"""

from .press import EXPORT_SCHEMA, EXPORT_VERSION, CompressKVPress, load_export

__all__ = ["CompressKVPress", "load_export", "EXPORT_SCHEMA", "EXPORT_VERSION"]
