"""A history of long messages is listed in pages limited by bytes as well as by count: the
largest page size still gives pages of about 1 MiB, each with the next page's token, and
walking them returns every message once."""

from __future__ import annotations

import uuid

from tests.integration.conversation.conftest import with_key
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge.conversation.v1 import message_pb2
from vocalbridge_common.pagination import PAGE_BYTE_BUDGET

CONTENT_CHARS = 30_000  # under the 32,000 a turn may carry


async def test_long_messages_are_paged_by_bytes(conversation, new_session, md):
    _, session = await new_session(conversation)
    turns = 40  # 40 user messages of 30,000 characters: over 1 MiB with the replies
    for i in range(turns):
        content = f"{i:03d} " + "long " * (CONTENT_CHARS // 5)
        await conversation.SendMessage(
            cs.SendMessageRequest(session=session.name, content=content[:CONTENT_CHARS]),
            metadata=with_key(md, uuid.uuid4().hex),
        )
    pages, token = [], ""
    while True:
        page = await conversation.ListMessages(
            cs.ListMessagesRequest(parent=session.name, page_size=1000, page_token=token), metadata=md
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    assert len(pages) >= 2  # the count alone would have made one page
    for page in pages:
        text_bytes = sum(len(m.content.encode()) for m in page.messages)
        assert text_bytes <= PAGE_BYTE_BUDGET, (len(page.messages), text_bytes)
    names = [m.name for page in pages for m in page.messages]
    assert len(names) == len(set(names)) == 2 * turns
    users = [m.content[:3] for page in pages for m in page.messages if m.role == message_pb2.USER]
    assert users == [f"{i:03d}" for i in range(turns)]
