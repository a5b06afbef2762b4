"""Build the lab's tiny Llama for vLLM, with no hub access (run with ``.venv-vllm/bin/python``).

``python build_model.py OUT_DIR``: a ``LlamaConfig`` of hidden size 128, 2 layers, 4 heads, random weights in
bfloat16, and a byte-level BPE tokenizer trained locally with ``tokenizers`` on generated text, saved as a
``PreTrainedTokenizerFast`` (with a chat template). Deterministic (fixed seeds). Written into a temporary sibling
folder and renamed into place, so an interrupted build leaves no half model behind."""
import os
import random
import shutil
import sys


def _corpus(n: int = 4000):
    rnd = random.Random(0)
    words = ("the model serves tokens latency queue prefill decode cache request batch gpu cpu prompt answer "
             "question time first token stream server client trace span metric engine kv block memory "
             "schedule wait run finish length stop user system assistant hello world data a an of to in").split()
    for _ in range(n):
        yield " ".join(rnd.choice(words) for _ in range(rnd.randint(5, 40))) + "."


def build(out: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=2048, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=1024)
    fast.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                          "{% if add_generation_prompt %}<s>assistant:{% endif %}")
    fast.save_pretrained(tmp)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id, torch_dtype="bfloat16")
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_model.py OUT_DIR")
    build(sys.argv[1])
    print(f"tiny Llama written to {sys.argv[1]}")
