//! The ChatML chat template of SmolLM2-Instruct and Qwen2.5-Instruct: an
//! optional default system turn, the user turn, then the opening of the
//! assistant turn.

/// Opens a turn.
const START: &str = "<|im_start|>";
/// Ends a turn.
const END: &str = "<|im_end|>";

/// A ChatML template with the model's default system message, if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatTemplate {
    /// The system message the model's template inserts when the conversation
    /// has none.
    pub default_system: Option<String>,
}

impl ChatTemplate {
    /// Reads the default system message out of a Jinja chat template such as
    /// the one in SmolLM2's or Qwen2.5's `tokenizer.chat_template`: the first
    /// literal text between `<|im_start|>system` + a newline (or its Jinja
    /// escape `\n`) and the next `<|im_end|>` (an occurrence followed by
    /// template code, such as `' + messages[0]['content']`, is the
    /// conversation's own system turn).
    pub fn from_jinja(template: &str) -> Self {
        let opens = [format!("{START}system\n"), format!("{START}system\\n")];
        let mut found: Vec<(usize, &str)> = opens
            .iter()
            .flat_map(|open| {
                template.match_indices(open.as_str()).filter_map(|(at, _)| {
                    let rest = &template[at + open.len()..];
                    rest.find(END).map(|end| (at, &rest[..end]))
                })
            })
            .collect();
        found.sort_by_key(|(at, _)| *at);
        let default_system = found
            .into_iter()
            .map(|(_, text)| text)
            .find(|text| !text.contains(['\'', '"', '{', '}', '+']))
            .map(str::to_string);
        Self { default_system }
    }

    /// One user turn and the opening of the assistant's answer.
    pub fn user_prompt(&self, text: &str) -> String {
        let system = self
            .default_system
            .as_ref()
            .map(|s| format!("{START}system\n{s}{END}\n"))
            .unwrap_or_default();
        format!("{system}{START}user\n{text}{END}\n{START}assistant\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_default_system_message_of_smollm2s_template() {
        let jinja = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let t = ChatTemplate::from_jinja(jinja);
        assert_eq!(
            t.user_prompt("Hi"),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        // Qwen2.5's template writes the newline as a Jinja escape (`\n`).
        let qwen = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}"#;
        assert_eq!(
            ChatTemplate::from_jinja(qwen).default_system.as_deref(),
            Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        );
        assert_eq!(
            ChatTemplate::default().user_prompt("Hi"),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
