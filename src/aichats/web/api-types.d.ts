// The API objects the web app reads and sends, for the type check of its JavaScript
// (`tsc`, see tsconfig.json; nothing here is served). Each interface has the name of a schema
// of /openapi.json and names the same fields: tests/web/test_api_types.py checks the names,
// which are optional and which may be null, so a change to the API shows up here.
// Written by hand rather than generated: a generator would be one more dependency and build
// step for two dozen small types, and the test keeps them honest.

export type AgentIdentifier = "support" | "general";
export type NotificationPreference = "all" | "none";
export type MessageSource = "manual" | "suggestion" | "link" | "schedule";

export interface PageInfo {
  start_cursor: string | null;
  end_cursor: string | null;
  has_next_page: boolean;
  has_previous_page: boolean;
}

export interface UserRef {
  id: string;
}

export interface AiChat {
  id: string;
  title: string | null;
  notification_preference: NotificationPreference;
  agent_identifier: AgentIdentifier;
  message_count: number;
  blended_token_usage: string; // a decimal, as text
  created_at: string;
  updated_at: string;
  last_message_at: string | null;
  user: UserRef;
}

/** The tools a chat's agent may use (GET/PUT /ai_chats/{id}/tools); null: every tool of the user. */
export interface ChatTools {
  ai_chat_id: string;
  tools: string[] | null;
}

export interface ChatToolsInput {
  tools: string[] | null;
}

export interface AiChatList {
  data: AiChat[];
  page_info: PageInfo;
}

export interface Attachment {
  id: string;
}

export interface ChatCreate {
  message_text: string;
  message_attachments?: Attachment[];
  message_source?: MessageSource;
  suggestion_type?: string | null;
  title?: string | null;
  current_company_id?: string | null;
  agent_identifier?: AgentIdentifier;
  tools?: string[] | null;
}

export interface ChatUpdate {
  title?: string | null;
  notification_preference?: NotificationPreference | null;
  current_company_id?: string | null;
}

export interface MessageInput {
  message_text: string;
  message_attachments?: Attachment[];
  message_source?: MessageSource;
  suggestion_type?: string | null;
}

export interface File {
  id: string;
  filename: string;
  content_type: string;
  size: number;
}

export interface Usage {
  input_tokens: number;
  output_tokens: number;
  blended_tokens: string; // a decimal, as text
}

export interface Message {
  id: string;
  ai_chat_id: string;
  role: "user" | "assistant";
  content: string;
  status: "pending" | "streaming" | "waiting" | "completed" | "failed" | "cancelled";
  error: string | null;
  source: string;
  attachments: File[];
  model: string | null;
  usage: Usage;
  tool_calls: ToolCall[]; // a reply's tool calls, in order (none for user messages)
  created_at: string;
  completed_at: string | null;
}

export type ToolCallStatus = "requested" | "awaiting_approval" | "approved" | "denied" | "running" | "completed" | "failed";

/** The MCP server of a tool (null for a built-in tool). */
export interface ToolServerRef {
  id: string | null; // tsrv_... for a user's server; null for an operator's
  name: string;
}

export interface ToolCall {
  id: string;
  name: string; // as the model was offered it: `<server>__<tool>`, or a built-in's name
  server: ToolServerRef | null;
  arguments: string; // JSON text, as the model wrote it (it may not parse)
  status: ToolCallStatus;
  result: string | null; // untrusted text: shown as text, never as markup
  is_error: boolean;
  needs_approval: boolean;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
}

/** A tool as its MCP server lists it. */
export interface ToolServerTool {
  name: string;
  description: string;
  read_only: boolean;
  destructive: boolean;
}

export interface ToolServer {
  id: string;
  name: string;
  url: string;
  has_headers: boolean;
  tools: ToolServerTool[];
  created_at: string;
  updated_at: string;
  refreshed_at: string;
}

export interface ToolServerList {
  data: ToolServer[];
  page_info: PageInfo;
}

export interface ToolServerInput {
  name: string;
  url: string;
  headers?: Record<string, string> | null;
}

export type ToolKind = "builtin" | "operator" | "user";

/** A tool the caller's agent can use (GET /tools). */
export interface AvailableTool {
  name: string; // as the model is offered it: `server__tool`, or a built-in's own name
  tool: string; // its own name on its server
  description: string;
  server: ToolServerRef | null; // null for a built-in tool
  kind: ToolKind;
  read_only: boolean;
  destructive: boolean;
  needs_approval: boolean;
}

export interface AvailableToolList {
  data: AvailableTool[];
}

export interface MessageList {
  data: Message[];
  page_info: PageInfo;
}

export interface Notification {
  id: string;
  kind: string;
  ai_chat_id: string;
  title: string;
  body: string;
  message_id: string | null;
  created_at: string;
  read_at: string | null;
}

export interface NotificationList {
  data: Notification[];
  page_info: PageInfo;
  unread_count: number;
}

export interface Badges {
  unread_count: number;
  total: number;
  ai_chats: Record<string, number>; // chat id -> unread replies
  latest_notification_id: string | null;
}

export interface Schedule {
  ai_chat_id: string;
  prompt: string;
  timezone: string;
  cron: string | null;
  interval_seconds: number | null;
  run_at: string | null;
  active: boolean;
  description: string;
  next_run_at: string | null;
  next_run_times: string[];
  last_run_at: string | null;
  consecutive_failures: number;
  last_error: string | null;
  tools: string[] | null;
  allow_changes: boolean;
  created_at: string;
  updated_at: string;
}

export interface ScheduleInput {
  prompt: string;
  timezone: string;
  cron?: string | null;
  interval_seconds?: number | null;
  run_at?: string | null;
  active?: boolean;
  tools?: string[] | null;
  allow_changes?: boolean;
}

export interface SchedulePreviewInput {
  prompt?: string | null;
  timezone: string;
  cron?: string | null;
  interval_seconds?: number | null;
  run_at?: string | null;
  active?: boolean;
  tools?: string[] | null;
  allow_changes?: boolean;
}

export interface SchedulePreview {
  description: string;
  next_run_times: string[];
  timezone: string;
}

export interface Run {
  id: string;
  trigger: "message" | "schedule" | "manual" | "retry";
  status: "queued" | "running" | "waiting" | "completed" | "failed" | "cancelled";
  scheduled_for: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
  model: string | null;
  usage: Usage;
}

export interface RunList {
  data: Run[];
  page_info: PageInfo;
}

export interface ErrorBody {
  type: string;
  message: string;
}

export interface Error {
  error: ErrorBody;
}

// Not in /openapi.json's schemas (the test knows these names):

/** GET /web/session. */
/** GET /usage: the day's blended tokens against the daily budget, schedules against their cap. */
export interface UsageSummary {
  date: string;
  blended_tokens: string; // a decimal, as text
  token_budget: string | null; // null: no limit
  remaining_tokens: string | null;
  resets_at: string;
  active_schedules: number;
  max_active_schedules: number | null;
  rate_limit_per_minute: number | null;
}

export interface Session {
  user_id: string;
  key_id: string;
  scopes: string[];
}

/** The data of the `tool_call.started`, `tool_call.completed` and `tool_call.approval_required` events. */
export interface ToolCallEvent {
  message_id: string;
  tool_call: ToolCall;
}

/** The data of a `message.delta` event: ``delta`` goes at ``offset`` (in code points) of the content. */
export interface MessageDelta {
  message_id: string;
  delta: string;
  offset?: number;
}
