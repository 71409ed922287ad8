"""Conversations every stored chat template is rendered on (expected strings: expected.json)."""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. Paris"}},
            "required": ["city"],
        },
    },
}

CONVERSATIONS = {
    "user_only": {"messages": [{"role": "user", "content": "Hello!"}]},
    "system_user": {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "  What is 2+2?  "},
        ]
    },
    "multi_turn": {
        "messages": [
            {"role": "system", "content": "Be kind <b>always</b> & \"quote\" it."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me a joke about 日本語 🦙."},
        ]
    },
    "no_generation_prompt": {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey."}],
        "add_generation_prompt": False,
    },
    "tools": {
        "messages": [
            {"role": "system", "content": "You can call tools."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"type": "function", "id": "call_1",
                             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "{\"temp_c\": 18, \"sky\": \"clear\"}", "tool_call_id": "call_1"},
        ],
        "tools": [WEATHER_TOOL],
    },
    "tools_no_system": {"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [WEATHER_TOOL]},
    "reasoning": {
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "Two plus two is four."},
            {"role": "user", "content": "And 3+3?"},
        ]
    },
    "thinking_off": {"messages": [{"role": "user", "content": "Quick: 5+5?"}], "enable_thinking": False},
    "system_only": {"messages": [{"role": "system", "content": "Only a system prompt."}]},
    "not_alternating": {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
}  # fmt: skip

# template file -> special tokens the tokenizer passes to it
TEMPLATES = {
    "gemma3-it.jinja": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "qwen2.5-instruct.jinja": {"bos_token": "", "eos_token": "<|im_end|>"},
    "qwen3.jinja": {"bos_token": "", "eos_token": "<|im_end|>"},
    "llama3.1-instruct.jinja": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "phi3.5-mini-instruct.jinja": {"bos_token": "<s>", "eos_token": "<|endoftext|>"},
}
