"""Adapters that put kvstore under agent frameworks.

* :mod:`kvstore.integrations.langgraph`: :class:`KVCheckpointSaver`, a LangGraph
  checkpointer on any :class:`~kvstore.KVStore` (extra ``[langgraph]``).
* :mod:`kvstore.integrations.langchain`: :class:`KVLangChainStore`, a LangChain
  ``BaseStore[str, Any]`` on any :class:`~kvstore.KVStore` (extra ``[langchain]``).

Each module imports its framework at import time, so import the one you use;
this package itself imports nothing. Their sync methods run the store on a
private event loop thread (:class:`kvstore.integrations.portal.StorePortal`).
"""
