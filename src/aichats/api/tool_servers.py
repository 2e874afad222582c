"""Operations of a user's MCP tool servers (``/tool_servers``) and of the tools an agent can use
(``/tools``): call the service, serialise (docs/tools.md)."""

from __future__ import annotations

from starlette.responses import Response

from aichats import crypto
from aichats.api import schemas
from aichats.api.inputs import page_request
from aichats.api.models import ToolServerInput
from aichats.api.operations import TRUE, Call, operation, paging
from aichats.api.responses import json_response, page_json
from aichats.config import Settings
from aichats.services import tool_servers
from aichats.services.tool_servers import server_json
from aichats.tools import builtin, toolbox, url_policy
from aichats.tools.operator import OperatorServers

TAG = "Tools"


def _access(settings: Settings) -> tool_servers.Access:
    return tool_servers.Access(
        policy=url_policy(allow_private=settings.tools_allow_private_urls),
        timeout=settings.tool_timeout_seconds,
        sealer=crypto.sealer(settings),
        # A chat's ``tools`` names servers and built-in tools alike: no server may take a built-in's name.
        reserved_names=frozenset({"builtin", *builtin.BUILTIN, *(server.name for server in settings.tool_servers)}),
    )


@operation(
    "POST",
    "/tool_servers",
    "createToolServer",
    summary="Register an MCP server (Streamable HTTP) whose tools the user's agent may call. It connects and lists "
    "the tools first: a server that cannot be reached or listed is refused (422) and nothing is stored. `headers` "
    "are sent with every request to it, stored encrypted, and never returned.",
    scope="ai_chat:create",
    tag=TAG,
    status=201,
    response=schemas.ToolServer,
    response_description="The server, with its tools.",
    errors=(400, 409, 413, 422),
    body=ToolServerInput,
)
async def create(call: Call) -> Response:
    data = call.body.new_server()
    row = await tool_servers.create_server(call.db, call.principal.user_id, data, _access(call.settings))
    return json_response(server_json(row), status=201)


@operation(
    "GET",
    "/tool_servers",
    "listToolServers",
    summary="The user's MCP tool servers, newest first (`first`/`after`).",
    scope="ai_chat:read",
    tag=TAG,
    response=schemas.ToolServerList,
    response_description="One page of tool servers.",
    errors=(422,),
    parameters=paging(backwards=False),
)
async def list_(call: Call) -> Response:
    page = await tool_servers.list_servers(call.db, call.principal.user_id, page_request(call.request))
    return json_response(page_json(page, server_json))


@operation(
    "GET",
    "/tool_servers/{tool_server_id}",
    "getToolServer",
    summary="One MCP tool server of the user.",
    scope="ai_chat:read",
    tag=TAG,
    response=schemas.ToolServer,
    response_description="The server.",
    errors=(404,),
)
async def get(call: Call) -> Response:
    row = await tool_servers.get_server(call.db, call.principal.user_id, call.path("tool_server_id"))
    return json_response(server_json(row))


@operation(
    "POST",
    "/tool_servers/{tool_server_id}/refresh",
    "refreshToolServer",
    summary="List the server's tools again. A server that cannot be reached or listed is a 422, and its tools stay "
    "as they were.",
    scope="ai_chat:update",
    tag=TAG,
    response=schemas.ToolServer,
    response_description="The server, with its tools as just listed.",
    errors=(404, 422),
)
async def refresh(call: Call) -> Response:
    server_id = call.path("tool_server_id")
    row = await tool_servers.refresh_server(call.db, call.principal.user_id, server_id, _access(call.settings))
    return json_response(server_json(row))


@operation(
    "DELETE",
    "/tool_servers/{tool_server_id}",
    "deleteToolServer",
    summary="Remove an MCP tool server: its tools are no longer offered (past calls keep its id).",
    scope="ai_chat:delete",
    tag=TAG,
    response=TRUE,
    response_description="`true`.",
    errors=(404,),
)
async def delete(call: Call) -> Response:
    await tool_servers.delete_server(call.db, call.principal.user_id, call.path("tool_server_id"))
    return json_response(True)


@operation(
    "GET",
    "/tools",
    "listTools",
    summary="Every tool the user's agent can use: built in, the operator's servers' and the user's own servers', "
    "each with the name the model sees, where it comes from, and whether a call waits for the user's approval.",
    scope="ai_chat:read",
    tag=TAG,
    response=schemas.AvailableToolList,
    response_description="The tools.",
)
async def list_tools(call: Call) -> Response:
    sealer = crypto.sealer(call.settings)
    tools = await toolbox.available(call.db, _operator(call), call.principal.user_id, sealer)
    return json_response({"data": [tool.as_json() for tool in tools]})


def _operator(call: Call) -> OperatorServers:
    """The operator's servers, kept by the app (its lifespan makes them, for its workers
    too) so that their lists are kept across requests."""
    servers: OperatorServers = call.request.app.state.operator_tool_servers
    return servers
