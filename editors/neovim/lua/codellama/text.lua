-- Pure text helpers for inline suggestions: partial accepts and typing through. No editor state here,
-- so tests call these directly.
local M = {}

--- The next "word" of a suggestion, as VS Code's "accept word" takes it: leading whitespace, then a run
--- of identifier characters, or else a run of other non-space characters. A suggestion that starts
--- with a newline gives the newline and the next line's indentation.
---@param text string
---@return string
function M.next_word(text)
  if text == '' then
    return ''
  end
  local newline = text:match('^\r?\n[ \t]*')
  if newline then
    return newline
  end
  local space = text:match('^[ \t]*')
  local rest = text:sub(#space + 1)
  local word = rest:match('^[%w_]+') or rest:match('^[^%w_%s]+') or ''
  if word == '' then
    -- only whitespace left on this line
    return space
  end
  return space .. word
end

--- The next line of a suggestion: up to (not including) the next newline; when the suggestion starts
--- with a newline, that newline and the whole line after it.
---@param text string
---@return string
function M.next_line(text)
  local first = text:match('^[^\n]*')
  if first ~= '' then
    return first
  end
  local nl = text:match('^\r?\n')
  if not nl then
    return ''
  end
  return nl .. (text:sub(#nl + 1):match('^[^\n]*') or '')
end

--- What is left of a suggestion after the user typed `typed` since it was shown, or nil when the
--- typed text does not follow the suggestion.
---@param suggestion string
---@param typed string
---@return string?
function M.advance(suggestion, typed)
  if typed == '' then
    return suggestion
  end
  if #typed <= #suggestion and suggestion:sub(1, #typed) == typed then
    return suggestion:sub(#typed + 1)
  end
  return nil
end

--- Splits a suggestion into the lines `nvim_buf_set_text` and virtual lines expect.
---@param text string
---@return string[]
function M.lines(text)
  return vim.split(text, '\n', { plain = true })
end

--- Where the cursor ends up after inserting `text` at (row, col) (0-based row, byte col).
---@param row integer
---@param col integer
---@param text string
---@return integer row, integer col
function M.end_position(row, col, text)
  local lines = M.lines(text)
  if #lines == 1 then
    return row, col + #lines[1]
  end
  return row + #lines - 1, #lines[#lines]
end

--- The text to display inline on the cursor line and the virtual lines below it. When the suggestion
--- rewrites the text right of the cursor (`replaced`, e.g. a closing bracket) and its first line ends
--- with that text, the inline part leaves it out so the existing characters complete the picture.
---@param text string
---@param replaced string text right of the cursor that accepting replaces
---@return string inline, string[] below
function M.display(text, replaced)
  local lines = M.lines(text)
  local inline = lines[1]
  if #lines == 1 and replaced ~= '' and #inline >= #replaced and inline:sub(-#replaced) == replaced then
    inline = inline:sub(1, #inline - #replaced)
  end
  return inline, vim.list_slice(lines, 2)
end

return M
