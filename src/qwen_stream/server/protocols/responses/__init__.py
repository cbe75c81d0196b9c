"""OpenAI's Responses API: create (streamed or not), retrieve, delete, previous_response_id."""
