"""--mcp: the named endpoints as MCP tools (Gradio's MCP server), described for agents, and the
grounding tool's boxes as data, through a real MCP client over streamable HTTP."""

from __future__ import annotations

import ast
import asyncio
import base64
import json
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import app
from tests.conftest import CAT
from tests.scripted_backend import ScriptedBackend

REPLY = "<ref>the cat</ref><box>[[100,100,500,500]]</box>"
TOOLS = {
    "image_chat",
    "multi_image_chat",
    "video_chat",
    "grounding",
    "compare",
    "compare_vote",
}


@contextmanager
def launched_mcp(backend):
    from interface.layout import CSS, build_demo

    demo = build_demo(backend)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, css=CSS, mcp_server=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def mcp_url(gradio_temp_dir):
    with launched_mcp(ScriptedBackend(REPLY)) as url:
        yield url


def test_the_tools_are_the_named_endpoints_each_described(mcp_url):
    schema = httpx.get(f"{mcp_url}gradio_api/mcp/schema", timeout=30).json()
    tools = {tool["name"]: tool for tool in schema}
    # The Document tab (another change) adds its endpoint as a tool too.
    assert TOOLS <= set(tools) <= TOOLS | {"document_chat"}
    for name, tool in tools.items():
        assert len(tool["description"]) > 80, name
        assert "Returns:" in tool["description"], name
        if name != "compare_vote":  # the thinking comes back apart from the answer
            assert "thinking: " in tool["description"].partition("Returns:")[2], name
        for parameter, spec in tool["inputSchema"]["properties"].items():
            assert spec.get("description"), (name, parameter)
    grounding = tools["grounding"]["inputSchema"]
    assert grounding["required"] == ["image", "query"]
    assert "data: URL" in grounding["properties"]["image"]["description"]
    assert "scripted" in grounding["properties"]["model"]["description"]
    assert grounding["properties"]["history"]["type"] == "array"  # a valid JSON schema


def call_grounding(url: str, progress: bool):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    image = "data:image/jpeg;base64," + base64.b64encode(Path(CAT).read_bytes()).decode()

    async def on_progress(*_):
        pass

    async def call():
        async with (
            streamablehttp_client(f"{url}gradio_api/mcp/") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            listed = await session.list_tools()
            assert {tool.name for tool in listed.tools} >= TOOLS
            return await session.call_tool(
                "grounding",
                {"image": image, "query": "the cat"},
                progress_callback=on_progress if progress else None,
            )

    return asyncio.run(asyncio.wait_for(call(), timeout=120))


def test_the_grounding_tool_returns_its_boxes_as_json(mcp_url):
    # With progress (the client sends a progress token) each output is a content item.
    result = call_grounding(mcp_url, progress=True)
    assert not result.isError
    texts = [item.text for item in result.content if item.type == "text"]
    assert texts[0] == REPLY
    boxes = json.loads(texts[1])
    assert [box["label"] for box in boxes] == ["the cat"]
    assert boxes[0]["x2"] > boxes[0]["x1"] > 0 and boxes[0]["y2"] > boxes[0]["y1"] > 0
    assert any(item.type == "image" for item in result.content)  # the drawing


def test_without_progress_the_boxes_are_json_inside_the_one_text(mcp_url):
    # Without a progress token Gradio sends all the outputs as one text (Python's repr).
    result = call_grounding(mcp_url, progress=False)
    assert not result.isError
    answer, boxes, _drawing, thinking = ast.literal_eval(result.content[0].text)
    assert (answer, thinking) == (REPLY, "")
    assert json.loads(boxes)[0]["label"] == "the cat"


def test_gradio_client_still_gets_the_boxes_as_a_list(mcp_url):
    from gradio_client import Client, handle_file

    client = Client(mcp_url, verbose=False)
    try:
        _, boxes, _, _ = client.predict(
            image=handle_file(CAT), query="the cat", mode="find", api_name="/grounding"
        )
    finally:
        client.close()
    assert boxes[0]["label"] == "the cat"


def test_the_mcp_flag_and_its_variable(monkeypatch):
    monkeypatch.delenv("INTERNVL_MCP", raising=False)
    monkeypatch.delenv("GRADIO_MCP_SERVER", raising=False)
    assert app.parse_args(["--mcp"]).mcp is True
    assert app.parse_args([]).mcp is False
    monkeypatch.setenv("INTERNVL_MCP", "yes")
    assert app.parse_args([]).mcp is True
    monkeypatch.setenv("INTERNVL_MCP", "0")
    assert app.parse_args([]).mcp is False
    monkeypatch.setenv("GRADIO_MCP_SERVER", "true")
    assert app.parse_args([]).mcp is True
    assert app.mcp_url("http://127.0.0.1:7860/") == "http://127.0.0.1:7860/gradio_api/mcp/"
    with pytest.raises(SystemExit, match="--mcp cannot be used with --auth"):
        app.check_mcp(app.parse_args(["--mcp"]), [("me", "pw")])
    app.check_mcp(app.parse_args(["--mcp"]), [])
