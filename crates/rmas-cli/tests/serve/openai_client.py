"""The official OpenAI python SDK against `rmas serve` (crates/rmas-cli/tests/serve.rs).

Usage: openai_client.py BASE_URL API_KEY QUESTION; prints one JSON object with the plain and the
streamed completion of QUESTION (greedy), the listed models and the usage.
"""

import json
import sys

from openai import OpenAI

base_url, api_key, question = sys.argv[1:4]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": question},
]
models = [m.id for m in client.models.list().data]
plain = client.chat.completions.create(model=models[0], messages=messages, temperature=0)
pieces, finish, usage = [], None, None
stream = client.chat.completions.create(
    model=models[0], messages=messages, temperature=0, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
print(
    json.dumps(
        {
            "models": models,
            "plain": plain.choices[0].message.content,
            "plain_finish": plain.choices[0].finish_reason,
            "plain_usage": plain.usage.model_dump(),
            "rmas": plain.model_extra.get("rmas"),
            "streamed": "".join(pieces),
            "stream_pieces": len(pieces),
            "stream_finish": finish,
            "stream_usage": usage,
        }
    )
)
