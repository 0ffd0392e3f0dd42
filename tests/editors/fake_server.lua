-- An in-process fake of the codellama language server for plugin tests (vim.lsp.start accepts a
-- function as `cmd`). It answers textDocument/inlineCompletion with configured suggestions, minus
-- whatever of them the user already typed on the line (as the real server's typing-through cache does),
-- and records every request so tests can count them.
local M = {}

M.suggestions = { 'return a + b' }
M.delay_ms = 0
M.requests = {}
M.docs = {}

function M.count(method)
  local n = 0
  for _, r in ipairs(M.requests) do
    if r.method == method then
      n = n + 1
    end
  end
  return n
end

local function answer(params)
  local lines = M.docs[params.textDocument.uri] or {}
  local line = lines[params.position.line + 1] or ''
  local before = line:sub(1, params.position.character)
  local items = {}
  for _, s in ipairs(M.suggestions) do
    -- Drop the longest start of the suggestion that the line already ends with.
    local rest = s
    for k = #s, 1, -1 do
      if before:sub(-k) == s:sub(1, k) then
        rest = s:sub(k + 1)
        break
      end
    end
    if rest ~= '' then
      table.insert(items, { insertText = rest, range = { start = params.position, ['end'] = params.position } })
    end
  end
  return { items = items }
end

function M.cmd(dispatchers)
  local closing = false
  local next_id = 0
  local srv = {}
  function srv.request(method, params, callback, notify_reply_callback)
    next_id = next_id + 1
    local id = next_id
    table.insert(M.requests, { method = method, params = params })
    local result
    if method == 'initialize' then
      result = {
        capabilities = {
          textDocumentSync = 1,
          inlineCompletionProvider = true,
          completionProvider = { triggerCharacters = { '.' } },
          codeActionProvider = true,
        },
        serverInfo = { name = 'fake-codellama' },
      }
    elseif method == 'textDocument/inlineCompletion' then
      result = answer(params)
    elseif method == 'codellama/getStatus' then
      result = { state = 'ready', model = 'fake-model', device = 'cpu', dtype = 'bfloat16', backend = 'local' }
    else
      result = vim.NIL
    end
    local delay = method == 'textDocument/inlineCompletion' and M.delay_ms or 0
    vim.defer_fn(function()
      callback(nil, result)
      if notify_reply_callback then
        notify_reply_callback(id)
      end
    end, delay)
    return true, id
  end
  function srv.notify(method, params)
    table.insert(M.requests, { method = method, params = params })
    if method == 'textDocument/didOpen' then
      M.docs[params.textDocument.uri] = vim.split(params.textDocument.text, '\n', { plain = true })
    elseif method == 'textDocument/didChange' then
      M.docs[params.textDocument.uri] = vim.split(params.contentChanges[#params.contentChanges].text, '\n', { plain = true })
    elseif method == 'initialized' then
      dispatchers.notification('codellama/status', { state = 'ready', model = 'fake-model', device = 'cpu', lastLatencyMs = 12.4 })
    elseif method == 'exit' then
      closing = true
      dispatchers.on_exit(0, 15)
    end
    return true
  end
  function srv.is_closing()
    return closing
  end
  function srv.terminate()
    closing = true
  end
  return srv
end

return M
