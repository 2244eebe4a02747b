//! The ChatML chat template of SmolLM2-Instruct: an optional default system
//! turn, the user turn, then the opening of the assistant turn.

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
    /// the one in SmolLM2's `tokenizer.chat_template` (the text between
    /// `<|im_start|>system\n` and the next `<|im_end|>`).
    pub fn from_jinja(template: &str) -> Self {
        let open = format!("{START}system\n");
        let default_system = template.find(&open).and_then(|at| {
            let rest = &template[at + open.len()..];
            rest.find(END).map(|end| rest[..end].to_string())
        });
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
        assert_eq!(
            ChatTemplate::default().user_prompt("Hi"),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
