-- The plugin's own ghost text (Neovim 0.10/0.11, or ghost_text = "virtual_text"): asks the server for
-- `textDocument/inlineCompletion` after a pause in typing, shows the answer as extmark virtual text
-- at the cursor, and keeps it while the user types the same characters (no new request, no flicker).
local server = require('codellama.server')
local text = require('codellama.text')

local api = vim.api
local M = {}

M.ns = api.nvim_create_namespace('codellama.ghost')
local INVOKED, AUTOMATIC = 1, 2

---@class codellama.Suggestion
---@field text string     what is left to insert at the anchor
---@field replace integer bytes right of the anchor (same line) that accepting replaces

---@class codellama.GhostState
---@field items codellama.Suggestion[]
---@field index integer
---@field row integer      anchor: where the suggestion starts (0-based row, byte column)
---@field col integer
---@field extmark? integer
---@field timer? uv.uv_timer_t
---@field pending? { client: vim.lsp.Client, id: integer }
---@field tick integer     request counter: answers to older requests are dropped
---@field changedtick? integer the buffer's changedtick when the suggestion was last drawn

---@type table<integer, codellama.GhostState>
local states = {}

local debounce_ms = 150

local function state(bufnr)
  local s = states[bufnr]
  if not s then
    s = { items = {}, index = 1, row = 0, col = 0, tick = 0 }
    states[bufnr] = s
  end
  return s
end

local function cursor(bufnr)
  local win = vim.fn.bufwinid(bufnr)
  if win == -1 then
    return nil
  end
  local pos = api.nvim_win_get_cursor(win)
  return pos[1] - 1, pos[2]
end

local function current(s)
  return s.items[s.index]
end

local function clear_mark(bufnr, s)
  if s.extmark then
    pcall(api.nvim_buf_del_extmark, bufnr, M.ns, s.extmark)
    s.extmark = nil
  end
end

local function render(bufnr, s)
  s.changedtick = api.nvim_buf_get_changedtick(bufnr)
  local item = current(s)
  if not item or item.text == '' then
    clear_mark(bufnr, s)
    return
  end
  local line = api.nvim_buf_get_lines(bufnr, s.row, s.row + 1, false)[1] or ''
  local replaced = line:sub(s.col + 1, s.col + item.replace)
  local inline, below = text.display(item.text, replaced)
  local virt_text = { { inline, 'CodellamaSuggestion' } }
  if #s.items > 1 then
    table.insert(virt_text, { (' (%d/%d)'):format(s.index, #s.items), 'CodellamaSuggestionInfo' })
  end
  local virt_lines = {}
  for _, l in ipairs(below) do
    table.insert(virt_lines, { { l, 'CodellamaSuggestion' } })
  end
  -- Reusing the extmark id updates it in place: no frame without the suggestion.
  s.extmark = api.nvim_buf_set_extmark(bufnr, M.ns, s.row, math.min(s.col, #line), {
    id = s.extmark,
    virt_text = virt_text,
    virt_text_pos = 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = 'combine',
    right_gravity = false,
  })
end

local function cancel_pending(s)
  if s.pending then
    pcall(server.cancel, s.pending.client, s.pending.id)
    s.pending = nil
  end
end

local function stop_timer(s)
  if s.timer then
    s.timer:stop()
    if not s.timer:is_closing() then
      s.timer:close()
    end
    s.timer = nil
  end
end

--- Hides the suggestion and forgets it (pending requests are cancelled).
function M.dismiss(bufnr)
  local s = states[bufnr]
  if not s then
    return
  end
  stop_timer(s)
  cancel_pending(s)
  s.tick = s.tick + 1
  s.items, s.index = {}, 1
  clear_mark(bufnr, s)
end

--- Byte column of an LSP position on a line, in the client's position encoding.
local function byte_col(line, character, encoding)
  if encoding == 'utf-8' then
    return math.min(character, #line)
  end
  local ok, col
  if vim.fn.has('nvim-0.11') == 1 then
    ok, col = pcall(vim.str_byteindex, line, encoding, character, false)
  else
    ok, col = pcall(vim.str_byteindex, line, character, encoding == 'utf-16')
  end
  return ok and col or #line
end

--- Converts the server's items into suggestions anchored at the cursor (row, col).
local function to_suggestions(bufnr, items, row, col, encoding)
  local out = {}
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  for _, item in ipairs(items) do
    local insert = item.insertText
    if type(insert) == 'table' then
      -- A snippet: show and insert its plain text.
      insert = insert.value and tostring(vim.lsp._snippet_grammar.parse(insert.value)) or nil
    end
    if type(insert) == 'string' and insert ~= '' then
      local replace = 0
      local start_col = col
      if item.range then
        start_col = byte_col(line, item.range.start.character, encoding)
        if item.range['end'].line == row then
          replace = math.max(0, byte_col(line, item.range['end'].character, encoding) - col)
        end
      end
      -- The range may start left of the cursor (text the user typed is repeated in insertText).
      local typed = start_col < col and line:sub(start_col + 1, col) or ''
      local rest = text.advance(insert, typed)
      if rest and rest ~= '' then
        table.insert(out, { text = rest, replace = replace, command = item.command })
      end
    end
  end
  return out
end

--- Asks the server now. `kind` is the LSP trigger kind (1 invoked, 2 automatic).
function M.request(bufnr, kind)
  local s = state(bufnr)
  stop_timer(s)
  cancel_pending(s)
  local client = server.clients(bufnr)[1]
  local row, col = cursor(bufnr)
  if not client or not row then
    return
  end
  s.tick = s.tick + 1
  local tick = s.tick
  local changedtick = api.nvim_buf_get_changedtick(bufnr)
  local win = vim.fn.bufwinid(bufnr)
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding)
  params.context = { triggerKind = kind or AUTOMATIC }
  local ok, id = server.request(client, 'textDocument/inlineCompletion', params, function(err, result)
    if s.tick ~= tick then
      return -- superseded
    end
    s.pending = nil
    if err or not result or not api.nvim_buf_is_valid(bufnr) then
      return
    end
    local r, c = cursor(bufnr)
    -- Typed on while the server was thinking: this answer is for a text that no longer exists.
    if api.nvim_buf_get_changedtick(bufnr) ~= changedtick or r ~= row or c ~= col then
      return
    end
    if not vim.startswith(api.nvim_get_mode().mode, 'i') then
      return
    end
    s.items = to_suggestions(bufnr, result.items or result, row, col, client.offset_encoding)
    s.index, s.row, s.col = 1, row, col
    render(bufnr, s)
  end, bufnr)
  if ok and id then
    s.pending = { client = client, id = id }
  end
end

--- After a keystroke: keep the suggestion if the user typed what it says, else ask again after a pause.
function M.on_change(bufnr)
  local s = state(bufnr)
  local item = current(s)
  local row, col = cursor(bufnr)
  if item and row then
    local typed
    if row > s.row or (row == s.row and col >= s.col) then
      local ok, typed_lines = pcall(api.nvim_buf_get_text, bufnr, s.row, s.col, row, col, {})
      typed = ok and table.concat(typed_lines, '\n') or nil
    end
    local rest = typed and text.advance(item.text, typed)
    if rest and rest ~= '' then
      if typed ~= '' then
        item.text = rest
        s.items = { item } -- other candidates no longer line up with the text
        s.index, s.row, s.col = 1, row, col
      end
      render(bufnr, s)
      return
    end
  end
  M.dismiss(bufnr)
  M.schedule(bufnr)
end

--- Asks for a suggestion after `debounce_ms` without keystrokes.
function M.schedule(bufnr)
  local s = state(bufnr)
  stop_timer(s)
  s.timer = vim.defer_fn(function()
    s.timer = nil
    if api.nvim_buf_is_valid(bufnr) and vim.startswith(api.nvim_get_mode().mode, 'i') and api.nvim_get_current_buf() == bufnr then
      M.request(bufnr, AUTOMATIC)
    end
  end, debounce_ms)
end

--- The suggestion shown in the buffer (the text accept() would insert), or nil.
function M.suggestion(bufnr)
  local s = states[bufnr]
  local item = s and current(s)
  if not item or not s.extmark then
    return nil
  end
  return item.text
end

--- Inserts the whole suggestion, or its next word or line (`part` = "word" | "line").
---@return boolean accepted
function M.accept(bufnr, part)
  local s = states[bufnr]
  local item = s and current(s)
  if not item or not s.extmark then
    return false
  end
  local chunk = item.text
  if part == 'word' then
    chunk = text.next_word(item.text)
  elseif part == 'line' then
    chunk = text.next_line(item.text)
  end
  if chunk == '' then
    chunk = item.text
  end
  local whole = chunk == item.text
  local replace = whole and item.replace or 0
  local line = api.nvim_buf_get_lines(bufnr, s.row, s.row + 1, false)[1] or ''
  local end_col = math.min(s.col + replace, #line)
  api.nvim_buf_set_text(bufnr, s.row, s.col, s.row, end_col, text.lines(chunk))
  local row, col = text.end_position(s.row, s.col, chunk)
  local win = vim.fn.bufwinid(bufnr)
  if win ~= -1 then
    api.nvim_win_set_cursor(win, { row + 1, col })
  end
  if whole then
    M.dismiss(bufnr)
    if item.command then -- LSP 3.18: run on accept (the server counts the suggestion as accepted)
      server.execute(bufnr, item.command)
    end
  else
    -- The rest stays on screen, anchored after the inserted text.
    item.text = item.text:sub(#chunk + 1)
    s.items, s.index, s.row, s.col = { item }, 1, row, col
    render(bufnr, s)
  end
  return true
end

--- Shows the next (delta = 1) or previous (-1) candidate.
function M.cycle(bufnr, delta)
  local s = states[bufnr]
  if not s or #s.items == 0 then
    M.request(bufnr, INVOKED)
    return
  end
  s.index = (s.index - 1 + delta) % #s.items + 1
  render(bufnr, s)
end

function M.trigger(bufnr)
  M.dismiss(bufnr)
  M.request(bufnr, INVOKED)
end

--- Starts ghost text in a buffer.
function M.attach(bufnr, opts)
  debounce_ms = opts.debounce_ms or debounce_ms
  local group = api.nvim_create_augroup('codellama.ghost.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'TextChangedI', 'TextChangedP' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.on_change(bufnr)
    end,
  })
  api.nvim_create_autocmd('CursorMovedI', {
    group = group,
    buffer = bufnr,
    callback = function()
      -- Moving without typing (arrows, mouse): the suggestion no longer belongs here.
      local s = states[bufnr]
      local row, col = cursor(bufnr)
      if s and current(s) and (row ~= s.row or col ~= s.col) and api.nvim_buf_get_changedtick(bufnr) == s.changedtick then
        M.dismiss(bufnr)
        M.schedule(bufnr)
      end
    end,
  })
  api.nvim_create_autocmd('InsertEnter', {
    group = group,
    buffer = bufnr,
    callback = function()
      M.schedule(bufnr)
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.dismiss(bufnr)
    end,
  })
  api.nvim_create_autocmd({ 'BufUnload', 'LspDetach' }, {
    group = group,
    buffer = bufnr,
    callback = function(ev)
      if ev.event == 'LspDetach' and #server.clients(bufnr) > 1 then
        return
      end
      M.detach(bufnr)
    end,
  })
end

function M.detach(bufnr)
  M.dismiss(bufnr)
  states[bufnr] = nil
  pcall(api.nvim_del_augroup_by_name, 'codellama.ghost.' .. bufnr)
end

return M
