//! The reference protocol's vocabulary, shared by every other room and importing none of
//! them: the five agent events (names, order, statuses) and the two frame shapes (confirmation,
//! agent events) the reference service has used.

use serde::{Deserialize, Serialize};

/// The five agent events, in their required order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEvent {
    /// First, always.
    AgentStarted,
    /// The agent reasons.
    AgentThinking,
    /// A tool call begins.
    ToolExecuting,
    /// That tool call ends; always after `tool_executing`.
    ToolCompleted,
    /// Last.
    AgentCompleted,
}

impl AgentEvent {
    /// All five, in order.
    pub const ORDER: [AgentEvent; 5] = [
        AgentEvent::AgentStarted,
        AgentEvent::AgentThinking,
        AgentEvent::ToolExecuting,
        AgentEvent::ToolCompleted,
        AgentEvent::AgentCompleted,
    ];

    /// The `type` on the wire.
    pub fn name(self) -> &'static str {
        match self {
            AgentEvent::AgentStarted => "agent_started",
            AgentEvent::AgentThinking => "agent_thinking",
            AgentEvent::ToolExecuting => "tool_executing",
            AgentEvent::ToolCompleted => "tool_completed",
            AgentEvent::AgentCompleted => "agent_completed",
        }
    }

    /// `payload.status` (flat) or `data.status` (wrapped) on the wire.
    pub fn status(self) -> &'static str {
        match self {
            AgentEvent::AgentStarted => "started",
            AgentEvent::AgentThinking => "thinking",
            AgentEvent::ToolExecuting => "executing",
            AgentEvent::ToolCompleted => "completed",
            AgentEvent::AgentCompleted => "completed",
        }
    }
}

/// The shape of the connection confirmation frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmationShape {
    /// `{"type":"system_message","data":{"event":"connection_established",...}}`.
    #[default]
    SystemMessage,
    /// `{"type":"connection_established",...}` (later service versions).
    ConnectionEstablished,
}

/// The shape of agent event frames (the reference service has two emitters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventShape {
    /// `{"type","run_id","agent_name","user_id","thread_id","timestamp","payload":{..}}`.
    #[default]
    Flat,
    /// `{"type","data":{..,"run_id","thread_id","request_id"},"critical":true,
    /// "user_context":{"user_id","request_id"}}`.
    Wrapped,
}
