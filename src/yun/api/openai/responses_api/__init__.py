"""POST /v1/responses and the stored responses (OpenAI's Responses API), served as chat underneath."""
