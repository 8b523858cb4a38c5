"""The model hash on the device: fp16, bf16 and fp32 loads of one bf16-stored checkpoint, on CUDA and
on the CPU, must give one digest (leank_core/model_hash.py; the CPU half is also a unit test).

A random Llama with a 32K vocabulary (its embedding is larger than one hashing chunk, so chunked
streaming from the GPU is exercised) gets values fp16 keeps only as subnormals and one it cannot
hold at all, is saved in bf16, then loaded in each dtype on each device and hashed.

    PYTHONPATH=. python scripts/model_hash_device.py --out $OUT/model_hash_device.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from leank_core.model_hash import CHUNK_ELEMS, HASH_VERSION, model_hash  # noqa: E402

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def checkpoint(folder: Path) -> None:
    config = LlamaConfig(vocab_size=32768, hidden_size=1024, intermediate_size=2816, num_hidden_layers=2,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    assert model.model.embed_tokens.weight.numel() > CHUNK_ELEMS
    with torch.no_grad():
        w = model.model.layers[0].self_attn.k_proj.weight
        w[0, :4] = torch.tensor([3e-6, -7e-8, 1e-9, 5e-5])  # fp16 subnormals, or zero
        w[1, 0] = 1e5  # beyond fp16's range
    model.to(torch.bfloat16).save_pretrained(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    hashes: dict[str, dict[str, str]] = {}
    seconds: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint(Path(tmp))
        for device in devices:
            for name, dtype in DTYPES.items():
                model = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).to(device)
                start = time.perf_counter()
                hashes.setdefault(device, {})[name] = model_hash(model)
                seconds.setdefault(device, {})[name] = round(time.perf_counter() - start, 3)
                del model
    digests = {h for by_dtype in hashes.values() for h in by_dtype.values()}
    result = {"hash_version": HASH_VERSION, "torch": torch.__version__, "devices": devices,
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "hashes": hashes, "hash_seconds": seconds, "all_equal": len(digests) == 1}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0 if result["all_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
