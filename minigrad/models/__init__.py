"""minigrad.models: complete models built from minigrad.nn, ready to train.

    from minigrad.models import GPT, GPTConfig
"""
from minigrad.models.gpt import GPT, GPTConfig  # noqa: F401
from minigrad.models.bert import (  # noqa: F401,E402
    BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, BertModelOutput,
)
from minigrad.models.bert_tokenizer import BertTokenizer  # noqa: F401,E402
